"""A synthetic head phantom for simulator tests: scalp fat ring, skull, brain, an air sinus."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu_ops import cupy_available, optional_import

cupy, _ = optional_import("cupy")
HAS_CUPY = cupy_available()
BACKENDS = ["numpy", "cupy"]


def backend(name: str) -> Any:
    """The array module of a parametrised backend name (skipping is done by ``needs``)."""
    return np if name == "numpy" else cupy


def needs(name: str) -> Any:
    import pytest

    return pytest.param(
        name,
        marks=pytest.mark.skipif(name == "cupy" and not HAS_CUPY, reason="CuPy with a GPU absent"),
    )


BACKEND_PARAMS = [needs(name) for name in BACKENDS]


def head_phantom(
    n: int = 128,
) -> tuple[np.ndarray[Any, np.dtype[np.float32]], dict[str, np.ndarray[Any, Any]]]:
    """(image float32 (n, n), maps {'fat', 'air', 'bone', 'head'}), head centred and taller than
    wide (semi-axes 0.42 n along axis 0 and 0.34 n along axis 1)."""
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    cy = cx = n / 2

    def inside(ay: float, ax: float) -> np.ndarray[Any, Any]:
        return ((yy - cy) / (ay * n)) ** 2 + ((xx - cx) / (ax * n)) ** 2 <= 1.0

    scalp = inside(0.42, 0.34)
    skull = inside(0.39, 0.31)
    brain = inside(0.36, 0.28)
    white = inside(0.25, 0.18)
    sinus = (yy - (cy - 0.26 * n)) ** 2 + (xx - cx) ** 2 <= (0.05 * n) ** 2
    image = np.zeros((n, n), np.float32)
    image[scalp] = 1.0
    image[skull] = 0.15
    image[brain] = 0.6
    image[white] = 0.8
    image[sinus] = 0.0
    maps = {
        "fat": (scalp & ~skull).astype(np.float32),
        "bone": (skull & ~brain).astype(np.float32),
        "air": sinus.astype(np.float32),
        "head": scalp,
    }
    return image, maps
