"""Gibbs ringing: a truncated k-space rings at sharp edges.

The scanner acquires only the central N_acq = round(N (1 - 0.7 s)) samples along each in-plane
axis and zero-fills to the header's matrix N, so the image is the object convolved with the
Dirichlet kernel sin(pi N_acq x / N) / (N sin(pi x / N)): sharp edges overshoot by about 9 % and
ring with period N / N_acq pixels. With full k-space (s = 0) nothing changes. No apodisation.
A = |F^-1 (K * box_{N_acq})|.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu_ops import array_module
from gpu_ops.kspace import fft2c, ifft2c
from ml.simulate._common import Maps
from ml.simulate.header import AcquisitionHeader

MAX_TRUNCATION = 0.7


def acquired_matrix(header: AcquisitionHeader, severity: float) -> tuple[int, int]:
    """Acquired (rows, columns) of k-space kept at this severity (the display matrix is kept)."""
    keep = 1.0 - MAX_TRUNCATION * severity
    return max(2, round(header.rows * keep)), max(2, round(header.columns * keep))


def _box(n: int, n_acq: int, xp: Any) -> Any:
    box = xp.zeros(n, dtype=xp.float32)
    start = n // 2 - n_acq // 2
    box[start : start + n_acq] = 1.0
    return box


def apply(
    image: Any, severity: float, header: AcquisitionHeader, rng: np.random.Generator, maps: Maps
) -> Any:
    """Ringing magnitude of float32 ``(B, H, W)`` (see the module docstring)."""
    xp = array_module(image)
    n_r, n_c = acquired_matrix(header, severity)
    window = _box(image.shape[-2], n_r, xp)[:, None] * _box(image.shape[-1], n_c, xp)[None, :]
    return xp.abs(ifft2c(fft2c(image) * window))
