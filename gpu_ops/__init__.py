"""Array kernels that run on NumPy or, where installed with a GPU, CuPy.

Every function takes NumPy or CuPy arrays and returns the same kind; ``array_module`` picks the
namespace. CuPy is optional: its absence is reported only by a feature that needs it. This package
never imports TensorFlow, Django, Celery or Channels.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np


def array_module(x: Any) -> ModuleType:
    """``cupy`` for a CuPy array, else ``numpy`` (without importing CuPy when it is unused)."""
    if type(x).__module__.split(".")[0] == "cupy":
        import importlib

        return importlib.import_module("cupy")
    return np
