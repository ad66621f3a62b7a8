"""Motion: the head moves rigidly between phase-encode lines.

A 2-D Cartesian acquisition fills k-space one phase-encode line per TR (sequential order here).
If the head sits at rotation theta_j and translation t_j while line j is acquired, that line is
the line j of the moved object: K_j(k) = [F R(theta_j) C](k) * exp(-2 pi i k . t_j), with F the
centred 2-D Fourier transform (a translation is a linear phase across the line, a rotation
rotates the spectrum). The head jumps between a few poses at random times (1 to 3 events) and,
line by line, drifts periodically like breathing-driven nodding (t_j += a sin(2 pi j / P + phi),
P = 8 to 40 lines); the pose at the k-space centre line is the reference, so the anatomy stays in
place and the inconsistent lines become ghosts and blur along phase-encode. Amplitudes scale
with severity: jumps up to 5 mm and 5 degrees, drift up to 1 mm (mm converted to pixels with the
header's pixel spacing). The result is |F^-1 K|.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu_ops import array_module
from gpu_ops.kspace import centred_frequencies, fft2c, ifft2c
from gpu_ops.ndimage import rotate2d
from ml.simulate._common import Maps, batch_axes
from ml.simulate.header import AcquisitionHeader

MAX_TRANSLATION_MM = 5.0
MAX_ROTATION_DEG = 5.0
MAX_DRIFT_MM = 1.0


def _phase(
    h: int,
    w: int,
    sr: Any,
    sc: Any,
    xp: Any,
    rows: tuple[int, int] = (0, -1),
    cols: tuple[int, int] = (0, -1),
) -> Any:
    """exp(-2 pi i (f_r sr + f_c sc)) on the k-space block rows[0]:rows[1], cols[0]:cols[1]."""
    fr = centred_frequencies(h, xp)[:, None]
    fc = centred_frequencies(w, xp)[None, :]
    if rows != (0, -1):
        fr = fr[rows[0] : rows[1]]
    if cols != (0, -1):
        fc = fc[:, cols[0] : cols[1]]
    return xp.exp(-2j * np.pi * (fr * sr + fc * sc)).astype(xp.complex64)


def apply(
    image: Any, severity: float, header: AcquisitionHeader, rng: np.random.Generator, maps: Maps
) -> Any:
    """Motion-corrupted magnitude of float32 ``(B, H, W)`` (see the module docstring)."""
    xp = array_module(image)
    pe, _ = batch_axes(header)
    b, h, w = image.shape
    n_pe = image.shape[pe]
    out = xp.empty((b, h, w), dtype=xp.complex64)
    for i in range(b):
        n_events = int(rng.integers(1, 4))
        times = np.sort(rng.integers(int(0.1 * n_pe), int(0.9 * n_pe) + 1, n_events))
        bounds = np.concatenate([[0], times, [n_pe]])
        n_seg = n_events + 1
        shift_mm = rng.uniform(-1.0, 1.0, (n_seg, 2)) * severity * MAX_TRANSLATION_MM
        angles = rng.uniform(-1.0, 1.0, n_seg) * severity * MAX_ROTATION_DEG
        centre = int(np.searchsorted(bounds, n_pe // 2, side="right")) - 1
        shift_mm -= shift_mm[centre]
        angles -= angles[centre]
        lines = np.arange(n_pe)
        drift = np.sin(2.0 * np.pi * lines / rng.uniform(8.0, 40.0) + rng.uniform(0, 2 * np.pi))
        drift_mm = drift[:, None] * (rng.uniform(-1.0, 1.0, 2) * severity * MAX_DRIFT_MM)
        drift_mm -= drift_mm[n_pe // 2]
        spacing = np.asarray(header.pixel_spacing_mm)
        k_line = xp.empty((h, w), dtype=xp.complex64)
        for s in range(n_seg):
            lo, hi = int(bounds[s]), int(bounds[s + 1])
            if hi <= lo:
                continue
            moved = image[i : i + 1]
            if abs(angles[s]) > 1e-6:
                moved = rotate2d(moved, float(angles[s]))
            # One translation per phase-encode line of this segment: (rows px, columns px).
            shift_px = (shift_mm[s] + drift_mm[lo:hi]) / spacing
            per_line = (hi - lo, 1) if pe == -2 else (1, hi - lo)
            sr = xp.asarray(shift_px[:, 0].reshape(per_line), dtype=xp.float32)
            sc = xp.asarray(shift_px[:, 1].reshape(per_line), dtype=xp.float32)
            k = fft2c(moved[0])
            if pe == -1:
                k_line[:, lo:hi] = k[:, lo:hi] * _phase(h, w, sr, sc, xp, cols=(lo, hi))
            else:
                k_line[lo:hi, :] = k[lo:hi, :] * _phase(h, w, sr, sc, xp, rows=(lo, hi))
        out[i] = k_line
    return xp.abs(ifft2c(out))
