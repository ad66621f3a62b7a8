"""Slice sampling and resampling onto scanner-like grids.

A slice is cut from a :class:`~ml.data.sources.SourceVolume` in one of three orientations, at any
position where the head has signal (skull base and vertex included), then resampled to a target
matrix and field of view with a random in-plane rotation, scale and shift. Display convention of
the 2-D planes before rotation: axial rows run anterior→posterior, coronal and sagittal rows run
superior→inferior.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ml.data.sources import SourceVolume

Orientation = Literal["axial", "coronal", "sagittal"]
ORIENTATION_WEIGHTS: dict[Orientation, float] = {"axial": 0.6, "coronal": 0.2, "sagittal": 0.2}

MATRICES: tuple[tuple[int, int], ...] = (
    (128, 128),
    (192, 192),
    (256, 256),
    (320, 320),
    (384, 384),
    (512, 512),
    (256, 320),
    (384, 512),
)
"""Acquisition matrices (rows, columns) drawn uniformly; 384 x 512 is the product's common one."""

FOV_COLUMNS_MM: tuple[float, float] = (200.0, 260.0)
"""Field of view along the columns (mm); rows get FOV·rows/columns (square pixels)."""


@dataclass(frozen=True)
class Geometry:
    """Where a slice is cut and how it is laid on the output grid.

    ``index``: slice index along the orientation's axis of the source volume. ``matrix``: output
    (rows, columns). ``pixel_spacing_mm``: output (row, column) spacing. ``angle_deg``: in-plane
    rotation; ``scale``: zoom (> 1 enlarges anatomy); ``shift_mm``: (row, column) offset of the
    source centre.
    """

    orientation: Orientation
    index: int
    matrix: tuple[int, int]
    pixel_spacing_mm: tuple[float, float]
    angle_deg: float
    scale: float
    shift_mm: tuple[float, float]


_AXIS: dict[Orientation, int] = {"sagittal": 0, "coronal": 1, "axial": 2}


def signal_extent(presence: NDArray[np.float32], axis: int) -> tuple[int, int]:
    """First and last index along ``axis`` where ``presence`` (X, Y, Z) exceeds 0.5 anywhere."""
    other = tuple(a for a in range(3) if a != axis)
    profile = np.asarray(presence > 0.5).any(axis=other)
    idx = np.flatnonzero(profile)
    if idx.size == 0:
        return 0, presence.shape[axis] - 1
    return int(idx[0]), int(idx[-1])


def sample_geometry(
    rng: np.random.Generator, volume: SourceVolume, presence: NDArray[np.float32]
) -> Geometry:
    """Draw orientation, slice position over the whole head, matrix, FOV, rotation, scale, shift.

    ``presence``: float32 (X, Y, Z) where > 0.5 marks the head. A 2-D source (Z = 1) is axial only.
    """
    if volume.shape[2] == 1:
        orientation: Orientation = "axial"
    else:
        names = list(ORIENTATION_WEIGHTS)
        weights = np.array([ORIENTATION_WEIGHTS[n] for n in names])
        orientation = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    lo, hi = signal_extent(presence, _AXIS[orientation])
    index = int(rng.integers(lo, hi + 1))
    rows, cols = MATRICES[int(rng.integers(len(MATRICES)))]
    fov_c = float(rng.uniform(*FOV_COLUMNS_MM))
    spacing = fov_c / cols
    return Geometry(
        orientation=orientation,
        index=index,
        matrix=(rows, cols),
        pixel_spacing_mm=(round(spacing, 4), round(spacing, 4)),
        angle_deg=float(rng.uniform(-20.0, 20.0)) + float(rng.choice([0.0, 90.0], p=[0.8, 0.2])),
        scale=float(rng.uniform(0.85, 1.15)),
        shift_mm=(float(rng.uniform(-10, 10)), float(rng.uniform(-10, 10))),
    )


def cut(
    maps: Mapping[str, NDArray[np.float32]],
    voxel_mm: tuple[float, float, float],
    orientation: Orientation,
    index: int,
) -> tuple[dict[str, NDArray[np.float32]], tuple[float, float]]:
    """Cut the 2-D plane of every (X, Y, Z) map; returns name → (h, w) and its (row, col) mm."""
    out: dict[str, NDArray[np.float32]] = {}
    for name, volume in maps.items():
        if orientation == "axial":  # (X, Y) → rows Y anterior first, cols X
            plane = volume[:, :, index].T[::-1, :]
        elif orientation == "coronal":  # (X, Z) → rows Z superior first, cols X
            plane = volume[:, index, :].T[::-1, :]
        else:  # (Y, Z) → rows Z superior first, cols Y anterior first
            plane = volume[index, :, :].T[::-1, ::-1]
        out[name] = np.ascontiguousarray(plane, dtype=np.float32)
    spacing = {
        "axial": (voxel_mm[1], voxel_mm[0]),
        "coronal": (voxel_mm[2], voxel_mm[0]),
        "sagittal": (voxel_mm[2], voxel_mm[1]),
    }[orientation]
    return out, spacing


def resample(
    plane: NDArray[np.float32],
    source_mm: tuple[float, float],
    geometry: Geometry,
    *,
    order: int = 1,
) -> NDArray[np.float32]:
    """Lay a 2-D plane (h, w) with (row, col) spacing ``source_mm`` onto the geometry's grid.

    The output (rows, columns) float32 samples the plane at mm positions rotated by ``angle_deg``,
    divided by ``scale`` and shifted by ``shift_mm`` about the centres; outside is 0. When the
    output pixel is coarser than the source, the plane is first Gaussian-smoothed
    (sigma = 0.4·ratio px) against aliasing.
    """
    rows, cols = geometry.matrix
    out_mm = np.array(geometry.pixel_spacing_mm, dtype=np.float64)
    src_mm = np.array(source_mm, dtype=np.float64)
    ratio = out_mm / (src_mm * geometry.scale)
    sigma = [0.4 * r if r > 1.2 else 0.0 for r in ratio]
    source = ndimage.gaussian_filter(plane, sigma) if any(sigma) else plane
    theta = math.radians(geometry.angle_deg)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    matrix = np.diag(1.0 / src_mm) @ rot @ np.diag(out_mm) / geometry.scale
    centre_out = (np.array([rows, cols], dtype=np.float64) - 1) / 2
    centre_src = (np.array(plane.shape, dtype=np.float64) - 1) / 2
    offset = centre_src + np.array(geometry.shift_mm) / src_mm - matrix @ centre_out
    result = ndimage.affine_transform(
        source, matrix, offset=offset, output_shape=(rows, cols), order=order, mode="constant"
    )
    return np.asarray(result, dtype=np.float32)


def add_noise_floor(
    image: NDArray[np.float32], sigma: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Magnitude of image + complex Gaussian noise of std ``sigma`` per channel (Rician floor)."""
    real = image + rng.normal(0.0, sigma, image.shape)
    imag = rng.normal(0.0, sigma, image.shape)
    return np.asarray(np.hypot(real, imag), dtype=np.float32)


NOISE_FLOOR: tuple[float, float] = (0.004, 0.015)
"""Std of the clean images' complex noise, as a fraction of the head's p99 (SNR ≈ 65-250):
validation and test slices, drawn uniformly (their slices stay the same across rounds)."""

TRAIN_NOISE_FLOOR: tuple[float, float] = (0.004, 0.045)
"""The same for training slices, drawn log-uniformly (SNR ≈ 22-250): clinical scans, 1.5 T
FLAIR or thin slices, are often noisier than :data:`NOISE_FLOOR`, and a model that never saw such
a floor on clean slices takes it for noise, zipper or ghosting (round 14 of the model card)."""


def draw_noise_sigma(
    rng: np.random.Generator, *, varied: bool, override: tuple[float, float] | None = None
) -> float:
    """A clean slice's noise-floor sigma; one draw from ``rng`` in every case.

    ``override``: uniform over that range (a robustness set, ``dataset --noise-floor``);
    else training (``varied``) slices draw log-uniformly over :data:`TRAIN_NOISE_FLOOR` and the
    others uniformly over :data:`NOISE_FLOOR`.
    """
    if override is not None:
        return float(rng.uniform(*override))
    if varied:
        lo, hi = TRAIN_NOISE_FLOOR
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return float(rng.uniform(*NOISE_FLOOR))
