"""NumPy pre- and post-processing shared by training, evaluation and scoring.

Conventions: a slice is float32 ``(H, W)`` = ``(Rows, Columns)``; masks are ``(K, H, W)`` in the
order of :data:`ml.ARTIFACT_TYPES`. *Canonical* orientation puts phase-encode along array axis 1
(DICOM ``InPlanePhaseEncodingDirection`` ``ROW``); a ``COL`` slice is transposed, which is its own
inverse, so masks go back with the same transpose. The network sees images padded at the bottom
and right to a multiple of :data:`STRIDE`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.simulate.header import AcquisitionHeader

STRIDE = 16
"""Spatial size multiple the network needs (four 2x poolings)."""

HEADER_FEATURES: tuple[str, ...] = (
    "field_strength",
    "log_bandwidth",
    "log_te",
    "log_tr",
    "has_ti",
    "log_ti",
    "spacing_frequency",
    "spacing_phase",
)
"""The header vector fed to the network (FiLM), in this order; see :func:`header_vector`."""


def header_vector(
    *,
    field_strength_t: float,
    pixel_bandwidth_hz: float,
    te_ms: float,
    tr_ms: float,
    ti_ms: float | None,
    pixel_spacing_mm: tuple[float, float],
    phase_encode: str,
) -> NDArray[np.float32]:
    """float32 ``(8,)``: the acquisition values scaled to about [-2, 2] (order HEADER_FEATURES).

    Field strength / 1.5 - 1 (T), natural logs of bandwidth / 200 Hz/px, TE / 20 ms, TR / 500 ms,
    TI / 1000 ms (0 and ``has_ti`` 0 when there is none or NaN), and the pixel spacing (mm) along
    frequency- then phase-encode in the canonical frame, minus 1.
    """
    ti = None if ti_ms is None or not math.isfinite(float(ti_ms)) or ti_ms <= 0 else float(ti_ms)
    row_mm, col_mm = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    # ROW: phase-encode along axis 1 whose step is the column spacing (PixelSpacing[1]).
    phase_mm, freq_mm = (col_mm, row_mm) if phase_encode == "ROW" else (row_mm, col_mm)
    return np.array(
        [
            float(field_strength_t) / 1.5 - 1.0,
            math.log(max(float(pixel_bandwidth_hz), 1.0) / 200.0),
            math.log(max(float(te_ms), 0.5) / 20.0),
            math.log(max(float(tr_ms), 1.0) / 500.0),
            0.0 if ti is None else 1.0,
            0.0 if ti is None else math.log(ti / 1000.0),
            freq_mm - 1.0,
            phase_mm - 1.0,
        ],
        dtype=np.float32,
    )


def header_vector_from(header: AcquisitionHeader) -> NDArray[np.float32]:
    """:func:`header_vector` of an :class:`~ml.simulate.AcquisitionHeader`."""
    return header_vector(
        field_strength_t=header.field_strength_t,
        pixel_bandwidth_hz=header.pixel_bandwidth_hz,
        te_ms=header.te_ms,
        tr_ms=header.tr_ms,
        ti_ms=header.ti_ms,
        pixel_spacing_mm=header.pixel_spacing_mm,
        phase_encode=header.phase_encode,
    )


def canonical(array: NDArray[Any], phase_encode: str) -> NDArray[Any]:
    """Put phase-encode on the last axis: ``(..., H, W)`` → same (ROW) or transposed (COL).

    Its own inverse: ``canonical(canonical(a, pe), pe)`` is ``a``.
    """
    if phase_encode == "ROW":
        return array
    if phase_encode != "COL":
        raise ValueError(f"phase_encode must be 'ROW' or 'COL', not {phase_encode!r}")
    return np.swapaxes(array, -1, -2)


def normalise(image: NDArray[Any]) -> NDArray[np.float32]:
    """float32 ``(H, W)`` scaled so the p99 inside the head is 1 (robust to scanner units).

    The head is estimated as pixels above 10 % of the whole slice's p99; an all-zero slice comes
    back as zeros.
    """
    image = np.asarray(image, dtype=np.float32)
    top = float(np.percentile(image, 99))
    if not math.isfinite(top) or top <= 0:
        return np.zeros_like(image)
    inside = image[image > 0.1 * top]
    scale = float(np.percentile(inside, 99)) if inside.size else top
    return np.asarray(image / np.float32(scale if scale > 0 else top), dtype=np.float32)


def padded_shape(rows: int, columns: int, stride: int = STRIDE) -> tuple[int, int]:
    """``(rows, columns)`` rounded up to multiples of ``stride``."""
    return (-(-rows // stride) * stride, -(-columns // stride) * stride)


def pad_to_stride(batch: NDArray[np.float32], stride: int = STRIDE) -> NDArray[np.float32]:
    """float32 ``(B, H, W)`` zero-padded at the bottom and right to multiples of ``stride``."""
    rows, cols = batch.shape[-2:]
    prow, pcol = padded_shape(rows, cols, stride)
    if (prow, pcol) == (rows, cols):
        return batch
    out = np.zeros((*batch.shape[:-2], prow, pcol), dtype=np.float32)
    out[..., :rows, :cols] = batch
    return out
