"""The MR operator's workstation client: send slices as the scanner writes them, print each
verdict and its advice as it arrives. No Django: it needs only ``requests`` and ``websockets``."""
