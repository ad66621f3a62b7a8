"""Noise: thermal noise is complex Gaussian in k-space and Rician in the magnitude image.

Each k-space sample gets n_r + i n_i with n ~ N(0, sigma^2); with the orthonormal transform the
complex image noise has the same sigma, so A = |C + n| is Rician: in air (C = 0) Rayleigh with
standard deviation sigma sqrt(2 - pi/2) = 0.655 sigma, inside tissue nearly Gaussian with sigma.
Thermal noise power is proportional to the receiver bandwidth and the signal to B0, so
sigma = 0.1 s r sqrt(BW / 200 Hz) (3 T / B0), with r the slice's reference level.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu_ops import array_module
from gpu_ops.kspace import fft2c, ifft2c
from ml.simulate._common import Maps, head_and_reference, host_normal
from ml.simulate.header import AcquisitionHeader

BASE_FRACTION = 0.1
RAYLEIGH_STD_FACTOR = float(np.sqrt(2.0 - np.pi / 2.0))


def noise_sigma(severity: float, reference: float, header: AcquisitionHeader) -> float:
    """Per-channel complex noise standard deviation (image units) for this slice and header."""
    scale = np.sqrt(header.pixel_bandwidth_hz / 200.0) * (3.0 / header.field_strength_t)
    return float(BASE_FRACTION * severity * reference * scale)


def apply(
    image: Any, severity: float, header: AcquisitionHeader, rng: np.random.Generator, maps: Maps
) -> Any:
    """Rician-noisy magnitude of float32 ``(B, H, W)`` (see the module docstring)."""
    xp = array_module(image)
    _, ref = head_and_reference(image)
    sigma = xp.asarray(
        [noise_sigma(severity, float(r), header) for r in ref], dtype=xp.float32
    ).reshape(-1, 1, 1)
    n = host_normal(rng, (2, *image.shape), xp)
    k = fft2c(image) + sigma * (n[0] + 1j * n[1]).astype(xp.complex64)
    return xp.abs(ifft2c(k))
