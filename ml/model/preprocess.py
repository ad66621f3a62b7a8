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

from ml.header import AcquisitionHeader

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


# --- Working resolution -------------------------------------------------------------------------
# A model trained at a working resolution sees every slice resampled so that its long side is
# ``working_size`` pixels (each side rounded to a multiple of STRIDE, so no padding is needed);
# its mask probabilities are resampled back to the slice's own grid before thresholding.


def working_shape(rows: int, cols: int, long_side: int, stride: int = STRIDE) -> tuple[int, int]:
    """The working grid of a ``rows`` × ``cols`` canonical slice: the long side ``long_side``,
    the aspect kept up to rounding each side to the nearest multiple of ``stride`` (≥ stride)."""
    if rows < 1 or cols < 1:
        raise ValueError(f"cannot resample an empty slice ({rows}x{cols})")
    if long_side < stride or long_side % stride:
        raise ValueError(f"working size must be a positive multiple of {stride}, not {long_side}")
    scale = long_side / max(rows, cols)
    return (
        max(stride, round(rows * scale / stride) * stride),
        max(stride, round(cols * scale / stride) * stride),
    )


def _array_module(array: Any) -> Any:
    """CuPy for a CuPy array (imported only then), NumPy otherwise."""
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def _area_axis(x: Any, size: int, axis: int) -> Any:
    """Area (box) average along ``axis`` to ``size`` samples: exact overlap weights for any
    ratio, from the running integral of the signal (one cumulative sum, two gathers)."""
    xp = _array_module(x)
    n = x.shape[axis]
    if n % size == 0:  # whole blocks (512 -> 256, 384 -> 192): a plain block mean
        blocks = (*x.shape[: axis % x.ndim], size, n // size, *x.shape[axis % x.ndim + 1 :])
        return x.reshape(blocks).mean(axis=axis % x.ndim + 1, dtype=xp.float32)
    # float64 running sums: in float32 the integral's rounding shows up as 1e-5 errors.
    x = xp.moveaxis(x, axis, 0).astype(xp.float64)
    integral = xp.concatenate([xp.zeros((1, *x.shape[1:]), x.dtype), xp.cumsum(x, axis=0)])
    edges = np.linspace(0.0, n, size + 1)
    lo = np.minimum(np.floor(edges).astype(np.int64), n - 1)
    frac = (edges - lo).reshape(-1, *([1] * (x.ndim - 1)))
    # The integral at a fractional position: the whole pixels below it plus a part of the next.
    at = integral[xp.asarray(lo)] + xp.asarray(frac) * x[xp.asarray(lo)]
    out = (at[1:] - at[:-1]) * (size / n)
    return xp.moveaxis(out.astype(xp.float32), 0, axis)


def _linear_axis(x: Any, size: int, axis: int) -> Any:
    """Linear interpolation along ``axis`` to ``size`` samples (pixel centres aligned, as
    OpenCV's and TensorFlow's ``half_pixel_centers`` bilinear resize)."""
    xp = _array_module(x)
    n = x.shape[axis]
    if size == 2 * n:
        return _double_axis(x, axis)
    src = np.clip((np.arange(size) + 0.5) * (n / size) - 0.5, 0, n - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    shape = [1] * x.ndim
    shape[axis] = size
    f = xp.asarray((src - i0).astype(np.float32).reshape(shape))
    a, b = xp.take(x, xp.asarray(i0), axis=axis), xp.take(x, xp.asarray(i1), axis=axis)
    return (a + (b - a) * f).astype(xp.float32)


def _double_axis(x: Any, axis: int) -> Any:
    """:func:`_linear_axis` to twice the samples, bit for bit: the source positions are
    ``i - 1/4`` and ``i + 1/4``, so every output is ``a + (b - a) * f`` with ``f`` 3/4 or 1/4
    of one neighbour difference (shared by two outputs; the two ends copy the edge samples,
    where the clipped positions give ``f = 0``) — slices instead of two gathers."""
    xp = _array_module(x)
    axis %= x.ndim
    n = x.shape[axis]
    x = x.astype(xp.float32, copy=False)

    def at(index: slice | int) -> tuple[slice | int, ...]:
        return (slice(None),) * axis + (index,)

    out = xp.empty((*x.shape[:axis], 2 * n, *x.shape[axis + 1 :]), dtype=xp.float32)
    out[at(0)] = x[at(0)]
    out[at(2 * n - 1)] = x[at(n - 1)]
    if n > 1:
        low = x[at(slice(0, n - 1))]
        step = x[at(slice(1, n))] - low
        for first, weight in ((2, 0.75), (1, 0.25)):
            part = out[at(slice(first, 2 * n - 1, 2))]
            xp.multiply(step, xp.float32(weight), out=part)
            xp.add(low, part, out=part)
    return out


def resample(x: Any, shape: tuple[int, int], axes: tuple[int, int] = (-2, -1)) -> Any:
    """float32 ``x`` resampled along ``axes`` to ``shape``: area averaging along an axis that
    shrinks (so a 0/1 mask becomes its area fraction), linear interpolation along one that
    grows; NumPy or CuPy, same kind as ``x``."""
    xp = _array_module(x)
    x = xp.asarray(x, dtype=xp.float32)
    for axis, size in zip(axes, shape, strict=True):
        n = x.shape[axis]
        if size == n:
            continue
        x = _area_axis(x, size, axis) if size < n else _linear_axis(x, size, axis)
    return x


def upsample_probabilities(x: Any, shape: tuple[int, int], axes: tuple[int, int] = (1, 2)) -> Any:
    """Mask probabilities from the working grid back to the slice's grid ``shape``: bilinear
    (linear along each axis, also where the slice is smaller than the working grid)."""
    xp = _array_module(x)
    x = xp.asarray(x, dtype=xp.float32)
    for axis, size in zip(axes, shape, strict=True):
        if x.shape[axis] != size:
            x = _linear_axis(x, size, axis)
    return x


def to_model_grid(batch: Any, working: int | None) -> Any:
    """Canonical, normalised slices ``(S, H, W)`` → the network's input grid: the working grid
    of size ``working`` (:func:`working_shape`, :func:`resample`), or, with None, zero-padded to
    multiples of :data:`STRIDE` (native resolution)."""
    if working is None:
        return pad_to_stride(batch) if _array_module(batch) is np else _pad_xp(batch)
    rows, cols = batch.shape[-2:]
    return resample(batch, working_shape(rows, cols, working))


def _pad_xp(batch: Any) -> Any:
    xp = _array_module(batch)
    rows, cols = batch.shape[-2:]
    prow, pcol = padded_shape(rows, cols)
    out = xp.zeros((*batch.shape[:-2], prow, pcol), dtype=xp.float32)
    out[..., :rows, :cols] = batch
    return out


def from_model_grid(probabilities: Any, rows: int, cols: int, working: int | None) -> Any:
    """The network's mask probabilities ``(B, h, w, K)`` → the canonical slice grid
    ``(B, rows, cols, K)``: bilinear from the working grid, or the padding cropped (native)."""
    if working is None:
        return probabilities[:, :rows, :cols]
    return upsample_probabilities(probabilities, (rows, cols))
