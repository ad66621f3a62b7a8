"""Ghosting: a periodic modulation of k-space along phase-encode makes shifted replicas.

If every phase-encode line j is multiplied by m_j, the image becomes the convolution of the
object with the inverse transform of m along phase-encode. Two physical kinds are drawn:
N/2 ghosting (odd/even echo mismatch, as in EPI or a phase error alternating line by line),
m_j = 1 + eps e^{i phi} for odd j, which puts one ghost of relative amplitude eps/2 at half the
field of view; and pulsatile ghosting (cardiac or respiratory modulation of the signal),
m_j = 1 + eps cos(2 pi j TR / T + phi), whose ghosts lie +-N TR / T pixels (modulo N) from the
anatomy along phase-encode, with T the pulsation period (0.7-1.2 s cardiac) and TR from the
header. eps = 0.8 severity. The result is |F^-1 (m K)|.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu_ops import array_module
from gpu_ops.kspace import fft2c, ifft2c, modulate_lines
from ml.simulate._common import Maps, batch_axes
from ml.simulate.header import AcquisitionHeader

MAX_EPS = 0.8


def line_weights(
    n_pe: int, severity: float, header: AcquisitionHeader, rng: np.random.Generator
) -> np.ndarray[Any, np.dtype[np.complex64]]:
    """Complex weights m_j (``(n_pe,)`` complex64) of one slice's phase-encode lines."""
    eps = MAX_EPS * severity
    phi = rng.uniform(0.0, 2.0 * np.pi)
    j = np.arange(n_pe)
    if rng.random() < 0.5:
        weights = np.where(j % 2 == 1, 1.0 + eps * np.exp(1j * phi), 1.0)
    else:
        period_s = rng.uniform(0.7, 1.2)
        cycles_per_line = (header.tr_ms / 1000.0) / period_s
        # Ghost spacing below 2 px would merge with the anatomy: keep a visible distance.
        frac = cycles_per_line % 1.0
        if min(frac, 1.0 - frac) * n_pe < 4:
            cycles_per_line += rng.uniform(0.1, 0.4)
        weights = 1.0 + eps * np.cos(2.0 * np.pi * j * cycles_per_line + phi)
    return np.asarray(weights, dtype=np.complex64)


def apply(
    image: Any, severity: float, header: AcquisitionHeader, rng: np.random.Generator, maps: Maps
) -> Any:
    """Ghosted magnitude of float32 ``(B, H, W)`` (see the module docstring)."""
    xp = array_module(image)
    pe, _ = batch_axes(header)
    n_pe = image.shape[pe]
    weights = np.stack([line_weights(n_pe, severity, header, rng) for _ in range(image.shape[0])])
    return xp.abs(ifft2c(modulate_lines(fft2c(image), xp.asarray(weights), pe)))
