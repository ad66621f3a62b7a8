"""The diagnostic-suitability index, per slice and per series, with and without a region.

One set of functions serves both the unrestricted index and the index restricted to a
radiologist's region of diagnostic interest (ROI); the unrestricted index is the special case
"the region is the whole image".

Per slice. The model's suitability head gives ``s`` (0-1, 1 = fully diagnostic) for the whole
slice; its findings give the artifact masks ``M_k``. The head cannot say *where* its doubt comes
from, so the masks attribute it: with ``U`` the union of the masks and ``R`` the region (the
whole image without an ROI), the artifact density of the region is ``d(R) = |U ∩ R| / |R|`` and
the slice's index inside ``R`` is

    index(R) = 1 - (1 - s) * min(1, d(R) / d(image))

so an artifact wholly outside the region leaves ``1`` (diagnostic), one that covers the region at
least as densely as it covers the image keeps the model's ``s``, and ``R`` = the image gives
exactly ``s``. When the model marked nothing (``d(image) = 0``) its doubt cannot be placed and the
region keeps ``s``: drawing a region never clears an artifact nobody can locate.

Per series. The same weighting with and without a region: half the share of diagnostic slices,
half the mean index (see :func:`series_suitability`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

NONDIAGNOSTIC_BELOW = 0.5
"""A slice or series whose index (0-1) is below this is not diagnostic."""

_PHASE_TYPES = ("motion", "ghosting", "aliasing", "zipper")


@dataclass(frozen=True)
class FindingShare:
    """One finding as the reason sees it: its type, the share of the area it covers, confidence."""

    artifact_type: str
    share: float
    confidence: float


def slice_suitability(
    *,
    model_suitability: float,
    masks: Sequence[NDArray[np.uint8] | NDArray[np.bool_]],
    region: NDArray[np.bool_] | None = None,
) -> float:
    """The slice's index (0-1) inside ``region`` (module docstring).

    ``masks``: the findings' masks, each uint8/bool ``(Rows, Columns)`` non-zero = artifact;
    ``region``: bool ``(Rows, Columns)`` or None for the whole image.
    """
    s = float(np.clip(model_suitability, 0.0, 1.0))
    if not masks:
        return s
    union = np.zeros(np.shape(masks[0]), dtype=bool)
    for mask in masks:
        union |= np.asarray(mask, dtype=np.uint8) > 0
    if region is None:
        region = np.ones_like(union)
    d_image = float(union.mean())
    if d_image == 0.0:
        return s
    area = int(region.sum())
    d_region = float((union & region).sum()) / area if area else 0.0
    share = min(1.0, d_region / d_image)
    return s if share >= 1.0 else float(1.0 - (1.0 - s) * share)


def series_suitability(values: Sequence[float]) -> float | None:
    """The series' index (0-1) from its slices' indices: half the share of diagnostic slices,
    half their mean (a series is as usable as its usable slices, tempered by how bad the worst
    ones are). None for no slices."""
    if not values:
        return None
    v = np.asarray(values, dtype=np.float64)
    return float(np.clip(0.5 * (v >= NONDIAGNOSTIC_BELOW).mean() + 0.5 * v.mean(), 0.0, 1.0))


def slice_reason(
    *, suitability: float, findings: Sequence[FindingShare], phase_encode: str, area: str = "head"
) -> str:
    """One sentence naming the dominant artifact, how much of ``area`` it covers and where."""
    verdict = "not diagnostic" if suitability < NONDIAGNOSTIC_BELOW else "diagnostic"
    present = [f for f in findings if f.share > 0]
    if not present:
        return f"No artifact found in the {area}: {verdict}."
    worst = max(present, key=lambda f: (f.share, f.confidence))
    direction = {"ROW": "along the rows", "COL": "along the columns"}.get(phase_encode, "")
    where = (
        f" (phase-encode {direction})" if direction and worst.artifact_type in _PHASE_TYPES else ""
    )
    name = worst.artifact_type.replace("_", " ").capitalize()
    return f"{name} over {worst.share:.0%} of the {area}{where}: {verdict}."


def series_reason(
    slices: Sequence[tuple[int | str | None, float, str]], *, quarantined: int = 0
) -> str:
    """``slices``: (how the slice is named — its InstanceNumber, with the frame for a frame of
    a multi-frame instance —, index 0-1, reason) per scored slice."""
    tail = (
        f" {quarantined} slice{'s' if quarantined != 1 else ''} quarantined." if quarantined else ""
    )
    if not slices:
        return f"No slice scored.{tail}"
    bad = [s for s in slices if s[1] < NONDIAGNOSTIC_BELOW]
    if not bad:
        return f"All {len(slices)} slices diagnostic.{tail}"[:300]
    worst = min(slices, key=lambda s: s[1])
    return (
        f"{len(bad)} of {len(slices)} slices not diagnostic; worst slice {worst[0]}: {worst[2]}"
        f"{tail}"
    )[:300]


def polygon_raster(
    polygon: Sequence[Sequence[float]], rows: int, columns: int
) -> NDArray[np.bool_]:
    """bool ``(rows, columns)``: the pixels whose centres lie inside (or on) ``polygon``.

    ``polygon``: ``[[col, row], ...]`` in image pixel coordinates, pixel ``(r, c)`` centred on
    ``(c, r)`` (the DICOM / Cornerstone image-index convention).
    """
    image = Image.new("1", (columns, rows), 0)
    ImageDraw.Draw(image).polygon([(float(c), float(r)) for c, r in polygon], fill=1, outline=1)
    return np.asarray(image, dtype=bool)


def polygon_area(polygon: Sequence[Sequence[float]]) -> float:
    """The polygon's area in pixels (shoelace formula, absolute)."""
    xy = np.asarray(polygon, dtype=np.float64)
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)
