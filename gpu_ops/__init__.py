"""Array kernels that run on NumPy or, where installed with a GPU, CuPy.

Every function takes NumPy or CuPy arrays and returns the same kind; ``array_module`` picks the
namespace. CuPy is optional: its absence is reported only by a feature that needs it (see
``optional_import``). This package never imports TensorFlow, Django, Celery or Channels.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np


class OptionalImportError(ImportError):
    """Raised when a feature needs a module that is not installed (e.g. CuPy without a GPU)."""


class _Missing(ModuleType):
    """Stands in for a module that could not be imported; any attribute access explains why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name)
        self._reason = reason

    def __getattr__(self, attr: str) -> Any:
        raise OptionalImportError(f"{self.__name__} is needed here but unavailable: {self._reason}")


def optional_import(name: str) -> tuple[ModuleType, bool]:
    """Import ``name`` if possible: ``(module, True)``, else ``(placeholder, False)``.

    The placeholder raises ``OptionalImportError`` naming the module the moment a feature uses
    it, so a missing optional dependency is reported by the feature that needed it (after MONAI's
    ``monai.utils.module.optional_import``).
    """
    try:
        return importlib.import_module(name), True
    except Exception as exc:  # CuPy raises more than ImportError when no CUDA driver is present.
        return _Missing(name, f"{type(exc).__name__}: {exc}"), False


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    cp, ok = optional_import("cupy")
    if not ok:
        return False
    try:
        return int(cp.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


def array_module(x: Any) -> ModuleType:
    """``cupy`` for a CuPy array, else ``numpy`` (without importing CuPy when it is unused)."""
    if type(x).__module__.split(".")[0] == "cupy":
        return importlib.import_module("cupy")
    return np


def to_numpy(x: Any) -> np.ndarray[Any, Any]:
    """A NumPy copy (host memory) of a NumPy or CuPy array."""
    if type(x).__module__.split(".")[0] == "cupy":
        return np.asarray(x.get())
    return np.asarray(x)
