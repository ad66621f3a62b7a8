"""Helpers shared by the artifact simulators: batching, axes, reference level and tissue maps."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from gpu_ops import array_module
from gpu_ops.ndimage import binary_erosion2d, fill_holes2d, largest_component2d
from ml.simulate.header import AcquisitionHeader

Maps = dict[str, Any]


class Simulator(Protocol):
    """``apply(image, severity, header, rng, maps) -> image`` on float32 ``(B, H, W)`` batches."""

    def __call__(
        self,
        image: Any,
        severity: float,
        header: AcquisitionHeader,
        rng: np.random.Generator,
        maps: Maps,
    ) -> Any: ...


def batch_axes(header: AcquisitionHeader) -> tuple[int, int]:
    """(phase-encode axis, frequency-encode axis) of a ``(B, H, W)`` batch: -1/-2 or -2/-1."""
    return (-1, -2) if header.phase_encode == "ROW" else (-2, -1)


def head_and_reference(clean: Any) -> tuple[Any, Any]:
    """MISSION.md's head mask H and reference level r for each slice of ``(B, H, W)`` float32.

    H: fill the holes of ``C > 0.1 * p99(C)`` (p99 over the slice), keep the largest 4-connected
    component. r: p99 of C inside H (p99 of the slice when H is empty). Returns (bool
    ``(B, H, W)``, float32 ``(B,)``), same array kind as ``clean``.
    """
    xp = array_module(clean)
    b = clean.shape[0]
    p99 = xp.percentile(clean.reshape(b, -1), 99.0, axis=1).astype(xp.float32)
    above = clean > (0.1 * p99)[:, None, None]
    head = largest_component2d(fill_holes2d(above))
    ref = xp.empty((b,), dtype=xp.float32)
    for i in range(b):
        inside = clean[i][head[i]]
        ref[i] = xp.percentile(inside, 99.0) if inside.size else p99[i]
    return head, ref


def head_mask(clean: Any, maps: Maps) -> Any:
    """The 'head' map when given (as bool), else the derived head mask."""
    if "head" in maps:
        return maps["head"].astype(bool)
    return head_and_reference(clean)[0]


def derived_fat(clean: Any, maps: Maps) -> Any:
    """Fat fraction ``(B, H, W)`` float32 in [0, 1]: ``maps['fat']`` or an image-based estimate.

    The estimate is the bright outer rim of the head (scalp and marrow fat, bright on T1- and
    T2-weighted fast spin echo): pixels within 6 % of the head size of its border, weighted by
    ``clip((C / r - 0.4) / 0.4, 0, 1)``.
    """
    xp = array_module(clean)
    if "fat" in maps:
        return xp.clip(xp.asarray(maps["fat"], dtype=xp.float32), 0.0, 1.0)
    head, ref = head_and_reference(clean)
    depth = max(1, round(0.06 * min(clean.shape[-2:])))
    rim = head & ~binary_erosion2d(head, depth)
    weight = xp.clip((clean / ref[:, None, None] - 0.4) / 0.4, 0.0, 1.0)
    return (rim * weight).astype(xp.float32)


def host_normal(rng: np.random.Generator, shape: tuple[int, ...], xp: Any) -> Any:
    """Standard normal float32 drawn on the host (so NumPy and CuPy runs match), moved to xp."""
    return xp.asarray(rng.standard_normal(shape, dtype=np.float32))
