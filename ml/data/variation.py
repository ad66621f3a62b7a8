"""Head appearances the template sources lack, drawn for training slices only.

Every training source is a population template (a mean over ~150 brains, or tissue probability
maps): its tissue is smooth and its border regular, and one of them (ICBM152 2009a) is
skull-stripped. A single subject's scan is neither: it has fine anatomical texture (vessels,
sulcal detail, relaxation that varies voxel to voxel) and a scalp that is thin or thick, bright
or dull, broken, speckled, beyond a dark skull of varying width. The round-11 test showed what
the network made of that (``ml/MODEL_CARD.md``): on ODIN's measured slice it read the speckled
scalp rim beyond a dark gap as susceptibility distortion and gave clean slices a mean
suitability of 0.42. These two variations put such heads in the training data, as part of the
*clean* image (before any artifact, so the ground truth is unchanged in kind):

- :func:`add_scalp`: a rim outside the head at a varying distance (the skull, a dark gap) and of
  varying thickness, brightness and speckle, with its fat share (chemical shift acts on it) and
  the gap as bone in the simulators' maps;
- :func:`add_texture`: a multiplicative, spatially correlated tissue texture inside the head.

Validation and test slices are built without them, so those sets stay comparable across rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

FloatArray = NDArray[np.float32]

SCALP_CHANCE = 0.35
"""Chance of an added scalp on a training slice whose source has a scalp of its own."""
SCALP_CHANCE_STRIPPED = 0.7
"""Chance on a slice of a skull-stripped source (no scalp at all otherwise)."""
TEXTURE_CHANCE = 0.5
GAP_MM: tuple[float, float] = (0.0, 6.0)
RIM_MM: tuple[float, float] = (1.5, 9.0)
RIM_LEVEL: tuple[float, float] = (0.2, 1.2)
"""Rim brightness relative to the head's 99th percentile (dull muscle to bright fat)."""
RIM_SPECKLE: tuple[float, float] = (0.0, 0.6)
RIM_BREAK_CHANCE = 0.4
"""Chance that the rim is broken (missing over arcs), as thin scalps often look."""
TEXTURE_AMPLITUDE: tuple[float, float] = (0.03, 0.12)
TEXTURE_SCALE_PX: tuple[float, float] = (0.6, 2.0)


@dataclass(frozen=True)
class Scalp:
    """An added scalp: the new image and the rim's and the gap's fractions (float32, 0..1)."""

    image: FloatArray
    rim: FloatArray
    gap: FloatArray


def _unit_field(shape: tuple[int, ...], sigma_px: float, rng: np.random.Generator) -> FloatArray:
    """Gaussian-smoothed white noise scaled to zero mean and unit std."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_px)
    std = float(field.std())
    return np.asarray((field - field.mean()) / max(std, 1e-12), np.float32)


def add_scalp(
    image: NDArray[np.floating[Any]],
    head: NDArray[np.bool_],
    rng: np.random.Generator,
    pixel_mm: float,
) -> Scalp:
    """A rim beyond a gap around ``head`` (bool, same shape as the 2-D ``image``).

    Gap and rim widths (mm) vary along the border by a smooth field (scale ~15 mm); the rim's
    brightness is a drawn share of the head's p99 times a speckle of 1-2 px grains; partial
    volume at its edges (outside the head only: the head's own pixels are never changed). The
    image is returned with the rim added and the gap darkened to a drawn low level (the skull:
    a few per cent of the head's p99).
    """
    img = np.asarray(image, np.float32)
    if not head.any():
        zeros = np.zeros(img.shape, np.float32)
        return Scalp(img, zeros, zeros)
    filled = ndimage.binary_fill_holes(head)
    outside_mm = ndimage.distance_transform_edt(~filled) * pixel_mm
    smooth_px = max(15.0 / pixel_mm, 1.0)
    gap_mm = rng.uniform(*GAP_MM) * np.clip(1 + 0.35 * _unit_field(img.shape, smooth_px, rng), 0, 2)
    rim_mm = rng.uniform(*RIM_MM) * np.clip(
        1 + 0.4 * _unit_field(img.shape, smooth_px, rng), 0.3, 2
    )
    rim = ((outside_mm > gap_mm) & (outside_mm <= gap_mm + rim_mm)).astype(np.float32)
    gap = ((outside_mm > 0) & (outside_mm <= gap_mm)).astype(np.float32)
    if rng.random() < RIM_BREAK_CHANCE:
        rim *= _unit_field(img.shape, smooth_px, rng) > rng.uniform(-1.2, 0.2)
    outside = ~filled
    rim = np.clip(ndimage.gaussian_filter(rim, 0.6), 0, 1) * outside
    gap = np.clip(ndimage.gaussian_filter(gap, 0.6), 0, 1) * (1 - rim) * outside
    p99 = float(np.percentile(img[head], 99))
    grain = _unit_field(img.shape, rng.uniform(0.5, 1.5), rng)
    texture = np.clip(1 + rng.uniform(*RIM_SPECKLE) * grain, 0.05, None)
    level = rng.uniform(*RIM_LEVEL) * p99
    gap_level = rng.uniform(0.0, 0.06) * p99
    keep = 1 - rim - gap
    out = img * keep + rim * level * texture + gap * gap_level
    return Scalp(np.asarray(out, np.float32), rim.astype(np.float32), gap.astype(np.float32))


def add_texture(
    image: NDArray[np.floating[Any]], head: NDArray[np.bool_], rng: np.random.Generator
) -> FloatArray:
    """``image`` times (1 + a·field) inside ``head``: a drawn amplitude ``a`` of a correlated
    field (grain of :data:`TEXTURE_SCALE_PX`), fading out over the head's outer 2 px."""
    img = np.asarray(image, np.float32)
    if not head.any():
        return img
    amplitude = rng.uniform(*TEXTURE_AMPLITUDE)
    field = _unit_field(img.shape, rng.uniform(*TEXTURE_SCALE_PX), rng)
    inside = np.clip(ndimage.distance_transform_edt(head) / 2.0, 0, 1)
    return np.asarray(img * np.clip(1 + amplitude * field * inside, 0.2, None), np.float32)


def recipe() -> dict[str, Any]:
    """The variation's parameters, for the data set's manifest."""
    return {
        "splits": ["train"],
        "scalp_chance": SCALP_CHANCE,
        "scalp_chance_skull_stripped": SCALP_CHANCE_STRIPPED,
        "gap_mm": list(GAP_MM),
        "rim_mm": list(RIM_MM),
        "rim_level": list(RIM_LEVEL),
        "rim_speckle": list(RIM_SPECKLE),
        "rim_break_chance": RIM_BREAK_CHANCE,
        "texture_chance": TEXTURE_CHANCE,
        "texture_amplitude": list(TEXTURE_AMPLITUDE),
        "texture_scale_px": list(TEXTURE_SCALE_PX),
    }
