"""Aliasing (wrap-around): anatomy outside a reduced phase-encode field of view folds back.

Sampling k-space along phase-encode at spacing 1/FOV' makes the reconstructed image periodic
with period FOV': I'(y) = sum_n C(y + n FOV') for y inside the prescribed FOV' (Poisson
summation), while the frequency-encode axis is oversampled by the scanner and never wraps. The
prescribed FOV' is M = round(E (1 - 0.5 severity)) pixels along phase-encode, E being the head's
extent along phase-encode, centred on the head; it is expressed in mm through the header's pixel
spacing (FOV' = M x spacing). The image keeps the header's matrix: the M prescribed lines hold
the folded sum and the lines outside the prescribed FOV, which the reduced acquisition does
not image, are zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu_ops import array_module, to_numpy
from ml.simulate._common import Maps, batch_axes, head_mask
from ml.simulate.header import AcquisitionHeader


def apply(
    image: Any, severity: float, header: AcquisitionHeader, rng: np.random.Generator, maps: Maps
) -> Any:
    """Folded magnitude of float32 ``(B, H, W)`` (see the module docstring)."""
    xp = array_module(image)
    pe, _ = batch_axes(header)
    moved = xp.moveaxis(image, pe, -1)  # (B, F, P): phase-encode last
    head = np.any(to_numpy(xp.moveaxis(head_mask(image, maps), pe, -1)), axis=1)  # (B, P)
    n_pe = moved.shape[-1]
    out = xp.zeros_like(moved)
    for i in range(moved.shape[0]):
        cols = np.flatnonzero(head[i])
        lo, hi = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, n_pe)
        extent = hi - lo
        m = max(4, round(extent * (1.0 - 0.5 * severity)))
        start = min(max(0, (lo + hi) // 2 - m // 2), max(0, n_pe - m))
        stop = min(n_pe, start + m)
        m = stop - start
        folded = xp.zeros_like(moved[i, :, start:stop])
        for n in range(-(n_pe // m) - 1, n_pe // m + 2):
            a, b = start + n * m, stop + n * m
            src_lo, src_hi = max(a, 0), min(b, n_pe)
            if src_hi <= src_lo:
                continue
            folded[:, src_lo - a : src_hi - a] += moved[i, :, src_lo:src_hi]
        out[i, :, start:stop] = folded
    return xp.moveaxis(out, -1, pe)
