"""Susceptibility: off-resonance near air, bone or metal makes voids and distortion.

A susceptibility difference chi (ppm, relative to tissue) perturbs the field along B0 by
Delta B / B0 = F^-1[ D(k) F[chi] ]. B0 is through-plane for the axial slices simulated here;
for a source of extent L along B0, integrating the 3-D dipole kernel 1/3 - k_z^2/|k|^2 over k_z
at the slice centre gives the in-plane kernel D(k) = 1/3 - exp(-|k| L / 2) (|k| in rad/mm,
L = 20 mm). The off-resonance is Delta f = gamma B0 Delta B / B0 (Hz), its median over the head
removed (the scanner's centre-frequency adjustment). Two effects follow: (1) geometric
distortion along frequency-encode by d = Delta f / BW pixels (BW = pixel bandwidth), intensity
conserved through the Jacobian 1 - dd/dx (pile-up and stretching); (2) intravoxel dephasing at
the echo time, attenuation |sinc(TE |grad Delta f|)| (sinc(x) = sin(pi x)/(pi x), gradient in
Hz/px), the signal void of gradient echo. chi comes from the 'susceptibility' map, else
9.4 ppm x 'air' - 2.0 ppm x 'bone', else from dark cavities inside the head (an air pocket is
placed at a seeded spot inside the head when none is visible). Severity scales chi by 3 s
(s = 1: three times air-tissue, a weakly paramagnetic implant).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu_ops import array_module, to_numpy
from gpu_ops.ndimage import binary_erosion2d, warp_along_axis
from ml.simulate._common import Maps, batch_axes, head_and_reference
from ml.simulate.header import GAMMA_HZ_PER_T, AcquisitionHeader

AIR_PPM = 9.4
BONE_PPM = -2.0
SOURCE_LENGTH_MM = 20.0
SEVERITY_GAIN = 3.0


def dipole_kernel(shape: tuple[int, int], spacing_mm: tuple[float, float], xp: Any) -> Any:
    """In-plane dipole kernel D(k) = 1/3 - exp(-|k| L / 2), float32 ``(H, W)``, FFT order."""
    kr = 2.0 * np.pi * xp.fft.fftfreq(shape[0], d=spacing_mm[0])[:, None]
    kc = 2.0 * np.pi * xp.fft.fftfreq(shape[1], d=spacing_mm[1])[None, :]
    kmag = xp.sqrt(kr**2 + kc**2)
    return (1.0 / 3.0 - xp.exp(-kmag * SOURCE_LENGTH_MM / 2.0)).astype(xp.float32)


def susceptibility_map(
    image: Any, head: Any, ref: Any, rng: np.random.Generator, maps: Maps
) -> tuple[Any, Any]:
    """(chi in ppm ``(B, H, W)`` float32, proton-free mask to void) from maps or the image."""
    xp = array_module(image)
    if "susceptibility" in maps:
        return maps["susceptibility"].astype(xp.float32), xp.zeros(image.shape, dtype=bool)
    if "air" in maps or "bone" in maps:
        chi = xp.zeros(image.shape, dtype=xp.float32)
        if "air" in maps:
            chi += AIR_PPM * maps["air"].astype(xp.float32)
        if "bone" in maps:
            chi += BONE_PPM * maps["bone"].astype(xp.float32)
        return chi, xp.zeros(image.shape, dtype=bool)
    inner = binary_erosion2d(head, max(1, round(0.03 * min(image.shape[-2:]))))
    air = inner & (image < 0.1 * ref[:, None, None])
    void = xp.zeros(image.shape, dtype=bool)
    h, w = image.shape[-2:]
    rr = xp.arange(h, dtype=xp.float32)[:, None]
    cc = xp.arange(w, dtype=xp.float32)[None, :]
    deep = binary_erosion2d(head, max(1, round(0.12 * min(h, w))))
    for i in range(image.shape[0]):
        if int(air[i].sum()) >= 0.002 * max(1, int(head[i].sum())):
            continue
        candidates = np.flatnonzero(to_numpy(deep[i]).ravel())
        if candidates.size == 0:
            continue
        y, x = divmod(int(candidates[rng.integers(candidates.size)]), w)
        radius = 0.06 * min(h, w)
        pocket = (rr - y) ** 2 + (cc - x) ** 2 <= radius**2
        air[i] |= pocket
        void[i] = pocket
    return AIR_PPM * air.astype(xp.float32), void


def apply(
    image: Any, severity: float, header: AcquisitionHeader, rng: np.random.Generator, maps: Maps
) -> Any:
    """Distorted, dephased magnitude of float32 ``(B, H, W)`` (see the module docstring)."""
    xp = array_module(image)
    _, fe = batch_axes(header)
    head, ref = head_and_reference(image)
    if "head" in maps:
        head = maps["head"].astype(bool)
    chi, void = susceptibility_map(image, head, ref, rng, maps)
    chi = chi * (SEVERITY_GAIN * severity)
    kernel = dipole_kernel(image.shape[-2:], header.pixel_spacing_mm, xp)
    field_ppm = xp.real(xp.fft.ifft2(xp.fft.fft2(chi) * kernel)).astype(xp.float32)
    for i in range(image.shape[0]):
        inside = field_ppm[i][head[i]]
        if inside.size:
            field_ppm[i] -= xp.median(inside)
    delta_f = field_ppm * (1e-6 * GAMMA_HZ_PER_T * header.field_strength_t)
    grad_r, grad_c = xp.gradient(delta_f, axis=(-2, -1))
    attenuation = xp.abs(xp.sinc(header.te_ms * 1e-3 * xp.sqrt(grad_r**2 + grad_c**2)))
    signal = xp.where(void, 0.0, image) * attenuation
    shift = delta_f / header.pixel_bandwidth_hz
    jacobian = xp.clip(1.0 - xp.gradient(shift, axis=fe), 0.0, 5.0)
    return warp_along_axis(signal.astype(xp.float32), shift, fe) * jacobian
