"""Masks are stored compactly: one 1-bit PNG per instance and artifact type, in the encrypted
store (never as database blobs). Read back as uint8 0/1 arrays."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from backend.storage.store import store_get, store_put


def mask_key(
    *, site_id: int, run_id: str, sop_uid: str, artifact: str, frame: int | None = None
) -> str:
    """Where a finding's mask is stored; ``frame`` (1-based) for a frame of a multi-frame
    instance, None for a classic one."""
    where = sop_uid if frame is None else f"{sop_uid}/frames/{int(frame)}"
    return f"masks/{site_id}/{run_id}/{where}/{artifact}.png"


def mask_put(key: str, mask: np.ndarray) -> int:
    """``mask``: uint8/bool (Rows, Columns), non-zero = artifact."""
    return store_put(key, mask_png(mask))


def mask_png(mask: np.ndarray) -> bytes:
    """A 1-bit PNG of ``mask`` (uint8/bool (Rows, Columns), non-zero = white)."""
    rows, columns = mask.shape
    # Packed straight into a mode "1" image: converting from "L" would dither, for nothing.
    bits = np.packbits(mask > 0, axis=1).tobytes()
    out = io.BytesIO()
    Image.frombytes("1", (columns, rows), bits).save(out, format="PNG")
    return out.getvalue()


def mask_get(key: str) -> np.ndarray:
    image = Image.open(io.BytesIO(store_get(key)))
    return (np.asarray(image.convert("L")) > 0).astype(np.uint8)
