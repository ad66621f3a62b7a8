"""Zipper: RF interference at a fixed frequency makes a line along phase-encode.

An external RF source at offset f0 from the receiver centre frequency adds to every readout the
same complex exponential, with a phase that is not locked to the excitation and so differs from
line to line: K_j(k) += a e^{i phi_j} e^{-2 pi i k x0 / N} with x0 = f0 / BW (pixels from the
centre along frequency-encode, BW the pixel bandwidth). After reconstruction this is a line at
the fixed frequency-encode position N/2 + x0 running the whole length of phase-encode, its
intensity along the line scrambled by the random phases (the "zipper"). f0 is drawn uniformly
within +-0.4 N BW (inside the receiver band); a = 0.6 s r with r the slice's reference level.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu_ops import array_module
from gpu_ops.kspace import centred_frequencies, fft2c, ifft2c
from ml.simulate._common import Maps, batch_axes, head_and_reference
from ml.simulate.header import AcquisitionHeader

MAX_AMPLITUDE = 0.6


def draw_frequency_hz(rng: np.random.Generator, header: AcquisitionHeader) -> float:
    """The interference frequency f0 (Hz from the receiver centre): the first draw of a slice."""
    n_fe = header.columns if header.phase_encode == "COL" else header.rows
    return float(rng.uniform(-0.4, 0.4) * n_fe * header.pixel_bandwidth_hz)


def zipper_position(header: AcquisitionHeader, frequency_hz: float) -> float:
    """Array index along frequency-encode of the zipper line: N/2 + f0 / pixel bandwidth."""
    n_fe = header.columns if header.phase_encode == "COL" else header.rows
    return n_fe // 2 + frequency_hz / header.pixel_bandwidth_hz


def apply(
    image: Any, severity: float, header: AcquisitionHeader, rng: np.random.Generator, maps: Maps
) -> Any:
    """Magnitude with a zipper line, float32 ``(B, H, W)`` (see the module docstring)."""
    xp = array_module(image)
    pe, fe = batch_axes(header)
    _, ref = head_and_reference(image)
    n_pe, n_fe = image.shape[pe], image.shape[fe]
    k = fft2c(image)
    f_fe = centred_frequencies(n_fe, xp)
    for i in range(image.shape[0]):
        x0 = draw_frequency_hz(rng, header) / header.pixel_bandwidth_hz
        phases = xp.asarray(np.exp(1j * rng.uniform(0.0, 2.0 * np.pi, n_pe)).astype(np.complex64))
        readout = xp.exp(-2j * np.pi * f_fe * np.float32(x0)).astype(xp.complex64)
        # Unit-modulus line phases give a unit-rms profile; the readout peaks at sqrt(N_fe).
        amp = MAX_AMPLITUDE * severity * ref[i] / np.sqrt(n_fe)
        if pe == -1:
            k[i] += amp * readout[:, None] * phases[None, :]
        else:
            k[i] += amp * phases[:, None] * readout[None, :]
    return xp.abs(ifft2c(k))
