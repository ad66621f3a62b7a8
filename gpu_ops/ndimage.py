"""Image filters and morphology for ``(B, H, W)`` batches on NumPy (SciPy) or CuPy (cupyx).

Every function treats the last two axes as the image plane and the leading axis as independent
slices; results are NumPy for NumPy input and CuPy (device-resident) for CuPy input.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, cast

import numpy as np
import scipy.ndimage as _scipy_ndimage

from gpu_ops import array_module, optional_import


def _ndi(x: Any) -> ModuleType:
    if array_module(x) is np:
        return cast(ModuleType, _scipy_ndimage)
    module: ModuleType
    module, _ = optional_import("cupyx.scipy.ndimage")
    return module


def gaussian_filter2d(x: Any, sigma: float, mode: str = "reflect") -> Any:
    """In-plane Gaussian blur of each slice; ``x`` float ``(B, H, W)`` or ``(H, W)``, sigma in px.

    Same as ``scipy.ndimage.gaussian_filter(slice, sigma, mode=mode)`` slice by slice (truncate 4).
    """
    sig = (0.0,) * (x.ndim - 2) + (sigma, sigma)
    return _ndi(x).gaussian_filter(x, sig, mode=mode)


def _plane_structure(ndim: int, connectivity: int) -> np.ndarray[Any, Any]:
    plane: np.ndarray[Any, Any] = _scipy_ndimage.generate_binary_structure(2, connectivity)
    return plane.reshape((1,) * (ndim - 2) + plane.shape)


def fill_holes2d(mask: Any) -> Any:
    """Fill the holes of each slice's boolean mask (4-connected background), bool same shape."""
    ndi = _ndi(mask)
    xp = array_module(mask)
    if xp is np:
        return ndi.binary_fill_holes(mask, structure=_plane_structure(mask.ndim, 1))
    # cupyx fills by labelling the background of the whole array padded on every axis, with a
    # structuring element 3 wide on every axis: a (1, 3, 3) element raises there, and a 3-D one
    # that keeps slices apart leaves each slice's own background a "hole" (the first label is
    # the padding before the first slice). So one 2-D call per slice, with its default element
    # (4-connected, the same as SciPy's here).
    flat = mask.reshape((-1, *mask.shape[-2:]))
    out = xp.empty(flat.shape, dtype=bool)
    for i in range(flat.shape[0]):
        out[i] = ndi.binary_fill_holes(flat[i])
    return out.reshape(mask.shape)


def largest_component2d(mask: Any) -> Any:
    """Keep, per slice, the largest 4-connected component of a boolean mask (all False if empty)."""
    ndi = _ndi(mask)
    xp = array_module(mask)
    flat = mask.reshape((-1, *mask.shape[-2:]))
    out = xp.zeros_like(flat, dtype=bool)
    structure = xp.asarray(_plane_structure(2, 1))
    for i in range(flat.shape[0]):
        labels, n = ndi.label(flat[i], structure=structure)
        if int(n) == 0:
            continue
        counts = xp.bincount(labels.ravel())
        counts[0] = 0
        out[i] = labels == int(xp.argmax(counts))
    return out.reshape(mask.shape)


def binary_erosion2d(mask: Any, iterations: int) -> Any:
    """In-plane 4-connected erosion of each slice's boolean mask, ``iterations`` pixels deep."""
    if iterations <= 0:
        return mask.copy()
    ndi = _ndi(mask)
    xp = array_module(mask)
    structure = xp.asarray(_plane_structure(mask.ndim, 1))
    if xp is np:
        return ndi.binary_erosion(mask, structure=structure, iterations=iterations)
    # cupyx implements several iterations of a structure whose centre is set only by brute
    # force (NotImplementedError otherwise: seen on an H200 with CuPy 14); one pixel at a time
    # is the same erosion (border value 0).
    out = mask
    for _ in range(iterations):
        out = ndi.binary_erosion(out, structure=structure)
    return out


def rotate2d(x: Any, angle_deg: float) -> Any:
    """Rotate each slice of ``x`` ``(B, H, W)`` by ``angle_deg`` about the image centre.

    Bilinear, same shape, zero outside; positive angles turn counter-clockwise as displayed.
    """
    return _ndi(x).rotate(
        x, angle_deg, axes=(x.ndim - 1, x.ndim - 2), reshape=False, order=1, mode="constant"
    )


def warp_along_axis(x: Any, displacement: Any, axis: int) -> Any:
    """Resample ``x`` at ``index - displacement`` along ``axis`` (-2 or -1), linearly.

    ``x``, ``displacement``: float ``(B, H, W)``, pixels. Output ``y[i] = x[i - d[i]]``, so
    content moves by +d; samples from outside the image are zero. float32, same kind.
    """
    xp = array_module(x)
    moved = xp.moveaxis(x, axis, -1)
    d = xp.moveaxis(displacement, axis, -1)
    n = moved.shape[-1]
    pos = xp.arange(n, dtype=xp.float32) - d.astype(xp.float32)
    lo = xp.floor(pos)
    frac = (pos - lo).astype(xp.float32)
    lo_i = lo.astype(xp.int64)
    hi_i = lo_i + 1
    padded = xp.concatenate([moved, xp.zeros_like(moved[..., :1])], axis=-1)

    def sample(idx: Any) -> Any:
        inside = (idx >= 0) & (idx < n)
        safe = xp.where(inside, idx, n)
        return xp.take_along_axis(padded, safe, axis=-1)

    out = sample(lo_i) * (1.0 - frac) + sample(hi_i) * frac
    return xp.moveaxis(out.astype(xp.float32), -1, axis)
