"""Chemical shift (first kind): fat is mapped displaced along frequency-encode.

Fat protons precess 3.5 ppm slower than water, Delta f = 3.5e-6 * gamma * B0 (gamma = 42.577
MHz/T; 447 Hz at 3 T). Frequency-encoding maps frequency to position at the pixel bandwidth BW
(Hz/px), so fat appears shifted by d = 3.5e-6 * gamma * B0 / BW pixels along frequency-encode,
towards lower frequency (negative index here), never along phase-encode: 3.44 px at 3 T and
130 Hz/px, 0.86 px at 1.5 T and 260 Hz/px. With fat fraction f (the 'fat' map, else the bright
rim of the head), C = W + F with F = f C, and the acquired image is
A = W + s * |F shifted by -d| + (1 - s) F, the shift applied as a linear phase in k-space
(sub-pixel exact); severity s is the share of fat signal that escapes fat suppression.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu_ops import array_module
from gpu_ops.kspace import fourier_shift
from ml.simulate._common import Maps, batch_axes, derived_fat
from ml.simulate.header import GAMMA_HZ_PER_T, AcquisitionHeader

FAT_WATER_PPM = 3.5


def chemical_shift_hz(header: AcquisitionHeader) -> float:
    """Fat-water frequency difference at the header's field strength, Hz (positive)."""
    return FAT_WATER_PPM * 1e-6 * GAMMA_HZ_PER_T * header.field_strength_t


def chemical_shift_pixels(header: AcquisitionHeader) -> float:
    """Fat displacement along frequency-encode, pixels: 3.5 ppm * gamma * B0 / pixel bandwidth."""
    return chemical_shift_hz(header) / header.pixel_bandwidth_hz


def apply(
    image: Any, severity: float, header: AcquisitionHeader, rng: np.random.Generator, maps: Maps
) -> Any:
    """Fat-shifted magnitude of float32 ``(B, H, W)`` (see the module docstring)."""
    xp = array_module(image)
    _, fe = batch_axes(header)
    fat = image * derived_fat(image, maps)
    shifted = xp.abs(fourier_shift(fat, -chemical_shift_pixels(header), fe))
    return image - fat + severity * shifted + (1.0 - severity) * fat
