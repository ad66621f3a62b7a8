"""Masks on the wire: run lengths over the row-major pixels, starting with a run of zeros.

``[3, 2, 5]`` on a 2 x 5 grid is three unmarked pixels, two marked, five unmarked. Small for
brush strokes, trivial to write in the browser, and exact.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


class MaskFormatError(ValueError):
    pass


def rle_encode(mask: NDArray[np.generic]) -> list[int]:
    flat = (np.asarray(mask) > 0).reshape(-1).astype(np.int8)
    if flat.size == 0:
        return []
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0, *runs]
    return [int(r) for r in runs]


def rle_decode(runs: list[int], shape: tuple[int, int]) -> NDArray[np.uint8]:
    """The ``(rows, columns)`` uint8 0/1 mask; a malformed list raises :class:`MaskFormatError`."""
    size = shape[0] * shape[1]
    # No mask needs more runs than pixels (+ the leading run of zeros); a longer list, however
    # it sums, is padding that only costs memory and time.
    if isinstance(runs, list) and len(runs) > size + 1:
        raise MaskFormatError(f"{len(runs)} runs for {size} pixels")
    if not isinstance(runs, list) or not all(isinstance(r, int) and r >= 0 for r in runs):
        raise MaskFormatError("a mask is a list of non-negative run lengths")
    if sum(runs) != size:
        raise MaskFormatError(f"the runs cover {sum(runs)} pixels, the image has {size}")
    values = np.zeros(len(runs), np.uint8)
    values[1::2] = 1
    return np.repeat(values, runs).reshape(shape)
