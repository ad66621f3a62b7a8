"""Centred 2-D Fourier transforms and k-space line operations on NumPy or CuPy arrays.

Images are ``(..., H, W)`` with the last two axes in-plane (axis -2 = rows/vertical, axis -1 =
columns/horizontal). k-space is centred (DC at index ``n // 2``) and orthonormal, so white noise
of standard deviation sigma keeps sigma in both domains and ``ifft2c(fft2c(x)) == x`` to rounding.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import scipy.fft

from gpu_ops import array_module

_AXES = (-2, -1)
_WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _fft2(x: Any, inverse: bool) -> Any:
    xp = array_module(x)
    if xp is np:  # SciPy's pocketfft runs the batch on every core this process may use
        fn = scipy.fft.ifft2 if inverse else scipy.fft.fft2
        return fn(x, axes=_AXES, norm="ortho", workers=_WORKERS)
    fn = xp.fft.ifft2 if inverse else xp.fft.fft2
    return fn(x, axes=_AXES, norm="ortho")


def fft2c(x: Any) -> Any:
    """Centred orthonormal 2-D FFT of the last two axes.

    ``x``: real or complex ``(..., H, W)``, NumPy or CuPy. Returns complex64 k-space of the same
    shape and array kind, DC at ``(H // 2, W // 2)``.
    """
    xp = array_module(x)
    k = xp.fft.fftshift(_fft2(xp.fft.ifftshift(x, axes=_AXES), inverse=False), axes=_AXES)
    return k.astype(xp.complex64, copy=False)


def ifft2c(k: Any) -> Any:
    """Inverse of ``fft2c``: complex64 image ``(..., H, W)`` from centred k-space."""
    xp = array_module(k)
    x = xp.fft.fftshift(_fft2(xp.fft.ifftshift(k, axes=_AXES), inverse=True), axes=_AXES)
    return x.astype(xp.complex64, copy=False)


def centred_frequencies(n: int, xp: Any) -> Any:
    """Spatial frequencies of a centred k-space axis of length ``n``, cycles/pixel, float32."""
    return xp.fft.fftshift(xp.fft.fftfreq(n)).astype(xp.float32)


def modulate_lines(k: Any, weights: Any, axis: int) -> Any:
    """Multiply every k-space line along ``axis`` by its complex weight.

    ``k``: complex ``(..., H, W)``; ``weights``: ``(n,)`` or ``(B, n)`` (one row per slice of a
    ``(B, H, W)`` batch), ``n = k.shape[axis]``; ``axis`` is -2 (rows) or -1 (columns): the
    phase-encode axis whose lines are indexed. Returns a new array of the same kind.
    """
    xp = array_module(k)
    w = xp.asarray(weights).astype(xp.complex64, copy=False)
    if axis in (-2, k.ndim - 2):
        w = w[..., :, None]
    else:
        w = w[..., None, :]
    return k * w


def linear_phase(shape: tuple[int, int], shift_rows: Any, shift_cols: Any, xp: Any) -> Any:
    """k-space factor ``exp(-2 pi i (f_r * shift_rows + f_c * shift_cols))`` of an image shift.

    ``shape``: (H, W); shifts in pixels, scalars or arrays broadcastable against (H, W) (e.g.
    ``(H, 1)`` for one shift per k-space row). Multiplying centred k-space by it moves the image
    by (+shift_rows, +shift_cols) pixels (Fourier shift theorem). complex64 ``(H, W)``.
    """
    fr = centred_frequencies(shape[0], xp)[:, None]
    fc = centred_frequencies(shape[1], xp)[None, :]
    phase = -2.0 * xp.pi * (fr * shift_rows + fc * shift_cols)
    return xp.exp(1j * phase.astype(xp.float32)).astype(xp.complex64)


def fourier_shift(x: Any, shift: Any, axis: int) -> Any:
    """Shift images by a (sub-)pixel amount along ``axis`` (-2 or -1) with the shift theorem.

    ``x``: ``(B, H, W)`` real or complex; ``shift``: pixels, scalar or ``(B,)``; positive moves
    content towards higher indices (periodic boundary). Returns complex64 ``(B, H, W)``.
    """
    xp = array_module(x)
    s = xp.asarray(shift, dtype=xp.float32).reshape(-1, 1, 1)
    h, w = x.shape[-2], x.shape[-1]
    if axis in (-2, x.ndim - 2):
        ramp = linear_phase((h, w), s, 0.0, xp)
    else:
        ramp = linear_phase((h, w), 0.0, s, xp)
    return ifft2c(fft2c(x) * ramp)
