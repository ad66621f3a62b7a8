"""Bias field: smooth multiplicative shading from receive-coil and transmit (B1) inhomogeneity.

A = C * exp(s * 0.5 * b(x, y)) with b a smooth field normalised to max |b| = 1: a random cubic
polynomial in the normalised in-plane coordinates (receive-coil sensitivity falls off away from
the coil) plus, at high field, the dielectric centre brightening of B1 at 3 T, a central Gaussian
bump weighted (B0 / 3 T)^2 since the RF wavelength in tissue shrinks with B0. The field varies
over the whole field of view, never within a few pixels, so it leaves edges and noise untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu_ops import array_module
from ml.simulate._common import Maps
from ml.simulate.header import AcquisitionHeader

MAX_LOG_GAIN = 0.5


def field(
    shape: tuple[int, int], header: AcquisitionHeader, rng: np.random.Generator, xp: Any
) -> Any:
    """The normalised smooth field b, float32 ``(H, W)``, max |b| = 1."""
    y = xp.linspace(-1.0, 1.0, shape[0], dtype=xp.float32)[:, None]
    x = xp.linspace(-1.0, 1.0, shape[1], dtype=xp.float32)[None, :]
    b = xp.zeros(shape, dtype=xp.float32)
    for p in range(4):
        for q in range(4 - p):
            if p + q:
                b = b + float(rng.normal()) * y**p * x**q
    dielectric = (header.field_strength_t / 3.0) ** 2 * xp.exp(-(x**2 + y**2) / 0.3)
    b = b / max(float(xp.abs(b).max()), 1e-6) + dielectric
    return (b / max(float(xp.abs(b).max()), 1e-6)).astype(xp.float32)


def apply(
    image: Any, severity: float, header: AcquisitionHeader, rng: np.random.Generator, maps: Maps
) -> Any:
    """Shaded magnitude of float32 ``(B, H, W)`` (see the module docstring)."""
    xp = array_module(image)
    gains = xp.stack([field(image.shape[-2:], header, rng, xp) for _ in range(image.shape[0])])
    return image * xp.exp(MAX_LOG_GAIN * severity * gains)
