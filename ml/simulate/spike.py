"""Spike (herringbone): one or a few corrupt k-space samples make stripes across the image.

A discharge or a loose connection corrupts single k-space samples. A spike of value S at
(k_r, k_c) adds the plane wave (S / sqrt(HW)) e^{2 pi i (k_r y / H + k_c x / W)} to the whole
image (orthonormal transform), so the magnitude shows oblique stripes whose direction and spacing
are set by the spike's position (the further from the centre, the finer). 1 to 3 spikes are
placed at seeded positions at least 4 % of the matrix away from the k-space centre along one
axis, each of image amplitude 0.4 s r with r the slice's reference level and a random phase.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu_ops import array_module
from gpu_ops.kspace import fft2c, ifft2c
from ml.simulate._common import Maps, head_and_reference
from ml.simulate.header import AcquisitionHeader

MAX_AMPLITUDE = 0.4


def apply(
    image: Any, severity: float, header: AcquisitionHeader, rng: np.random.Generator, maps: Maps
) -> Any:
    """Magnitude with herringbone stripes, float32 ``(B, H, W)`` (see the module docstring)."""
    xp = array_module(image)
    _, ref = head_and_reference(image)
    b, h, w = image.shape
    k = fft2c(image)
    for i in range(b):
        for _ in range(int(rng.integers(1, 4))):
            while True:
                r = int(rng.integers(0, h))
                c = int(rng.integers(0, w))
                if abs(r - h // 2) >= 0.04 * h or abs(c - w // 2) >= 0.04 * w:
                    break
            value = (
                MAX_AMPLITUDE * severity * np.sqrt(h * w) * np.exp(1j * rng.uniform(0, 2 * np.pi))
            )
            k[i, r, c] += xp.asarray(value * ref[i], dtype=xp.complex64)
    return xp.abs(ifft2c(k))
