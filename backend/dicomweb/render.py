"""Frames as PNG for WADO-RS ``rendered`` and ``thumbnail``: the header's window (or the frame's
own range), 8-bit grey, optionally scaled down."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from ml.decode import pixel_array


def frame_array(ds: Dataset, index: int) -> np.ndarray:
    """Frame ``index`` (0-based) as float32 (rows, columns) in stored units after rescale.
    Compressed pixel data are decoded out of process (:mod:`ml.decode`, which raises
    :class:`ml.decode.DecodeError`)."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    frame = pixel_array(ds, index if frames > 1 else None)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return frame.astype(np.float32) * slope + intercept


def _window(ds: Dataset, frame: np.ndarray) -> tuple[float, float]:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        c = float(
            center[0] if hasattr(center, "__len__") and not isinstance(center, str) else center
        )
        w = float(width[0] if hasattr(width, "__len__") and not isinstance(width, str) else width)
        if w > 0:
            return c - w / 2, c + w / 2
    low, high = np.percentile(frame, [0.5, 99.5]) if frame.size else (0.0, 1.0)
    return float(low), float(max(high, low + 1))


def render_png(ds: Dataset, index: int, *, max_size: int | None = None) -> bytes:
    frame = frame_array(ds, index)
    low, high = _window(ds, frame)
    grey = np.clip((frame - low) / (high - low) * 255.0, 0, 255).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        grey = 255 - grey
    image = Image.fromarray(grey, mode="L")
    if max_size is not None:
        image.thumbnail((max_size, max_size))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
