"""Physical MR artifact simulators: ten types, applied in k-space, on NumPy or CuPy arrays.

``simulate(clean, artifact, severity, header, seed)`` returns the artifacted magnitude image;
``ground_truth(clean, artifacted)`` gives the mask and non-diagnostic label (MISSION.md). Each
artifact type lives in its own module (``ml.simulate.motion`` ...) whose docstring states the
physics and the formula it implements. See ``docs/simulator.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu_ops import array_module
from ml import ARTIFACT_TYPES
from ml.simulate import (
    aliasing,
    bias_field,
    chemical_shift,
    ghosting,
    gibbs,
    motion,
    noise,
    spike,
    susceptibility,
    zipper,
)
from ml.simulate._common import Maps, Simulator
from ml.simulate.chemical_shift import chemical_shift_pixels
from ml.simulate.ground_truth import ground_truth
from ml.simulate.header import AcquisitionHeader

SIMULATORS: dict[str, Simulator] = {
    "motion": motion.apply,
    "ghosting": ghosting.apply,
    "aliasing": aliasing.apply,
    "chemical_shift": chemical_shift.apply,
    "susceptibility": susceptibility.apply,
    "zipper": zipper.apply,
    "spike": spike.apply,
    "gibbs": gibbs.apply,
    "bias_field": bias_field.apply,
    "noise": noise.apply,
}
"""Artifact name -> ``apply(image (B,H,W) float32, severity, header, rng, maps)``."""

assert tuple(SIMULATORS) == ARTIFACT_TYPES

__all__ = [
    "SIMULATORS",
    "AcquisitionHeader",
    "chemical_shift_pixels",
    "ground_truth",
    "simulate",
]


def simulate(
    clean: Any,
    artifact: str,
    severity: float,
    header: AcquisitionHeader,
    seed: int,
    *,
    maps: Maps | None = None,
) -> Any:
    """One artifact of the given severity applied to clean magnitude images.

    ``clean``: float ``(H, W)`` or ``(B, H, W)`` magnitude, NumPy or CuPy (computed on that
    device), ``(H, W) == (header.rows, header.columns)``. ``artifact``: a name of
    ``ml.ARTIFACT_TYPES``. ``severity``: 0 (returns an exact copy) to 1. ``seed``: random draws
    come from ``numpy.random.default_rng(seed)`` on the host, so the same call gives the same
    bytes (and NumPy and CuPy agree within float tolerance). ``maps``: optional per-pixel tissue
    maps shaped like ``clean`` — ``'fat'`` (fraction 0..1), ``'susceptibility'`` (chi relative to
    tissue, ppm) or ``'air'``/``'bone'`` (fractions), ``'head'`` (mask); missing maps are
    estimated from the image. Returns float32 of the input shape and array kind, >= 0.
    """
    if artifact not in SIMULATORS:
        raise ValueError(f"unknown artifact {artifact!r}; choose one of {', '.join(SIMULATORS)}")
    if not 0.0 <= float(severity) <= 1.0:
        raise ValueError(f"severity must lie in [0, 1], not {severity}")
    if clean.ndim not in (2, 3):
        raise ValueError(f"clean must be (H, W) or (B, H, W), not shape {clean.shape}")
    if tuple(clean.shape[-2:]) != (header.rows, header.columns):
        raise ValueError(
            f"image is {clean.shape[-2]}x{clean.shape[-1]} but the header says "
            f"{header.rows}x{header.columns}"
        )
    xp = array_module(clean)
    image = xp.asarray(clean, dtype=xp.float32)
    if float(severity) == 0.0:
        return image.copy()
    batch = image.reshape((-1, *image.shape[-2:]))
    batch_maps: Maps = {}
    for name, value in (maps or {}).items():
        arr = xp.asarray(value)
        if arr.shape != image.shape:
            raise ValueError(f"map {name!r} has shape {arr.shape}, expected {image.shape}")
        batch_maps[name] = arr.reshape(batch.shape)
    rng = np.random.default_rng(seed)
    out = SIMULATORS[artifact](batch, float(severity), header, rng, batch_maps)
    out = xp.maximum(out.astype(xp.float32, copy=False), 0.0)
    return out.reshape(image.shape)
