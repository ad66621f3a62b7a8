"""The one module that touches stored files: de-identified instances and quarantined originals,
encrypted at rest with AES-256-GCM. Tests mock nothing here; they use a temporary directory."""
