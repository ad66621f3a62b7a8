"""Contrast synthesis from tissue maps with the MR signal equations.

Tissue relaxation (milliseconds) and proton density (relative to CSF = 1) at 1.5 T and 3 T:

=========  ======  =====  ======  ======  =====  ======  ====
tissue     T1 1.5  T2     T2* 1.5 T1 3.0  T2     T2* 3.0 PD
=========  ======  =====  ======  ======  =====  ======  ====
WM          646     72     66      832     69     53     0.69
GM         1197     95     84     1331     99     66     0.80
CSF        4000   2000   1500     4200   2000   1000     1.00
fat         343     58     50      382    133     40     0.90
muscle     1008     44     30     1412     50     25     0.70
bone       1000      1      1     1000      1      1     0.05
air           -      -      -        -      -      -     0
=========  ======  =====  ======  ======  =====  ======  ====

Sources: WM and GM T1 from Rooney et al., "Magnetic field and tissue dependencies of human brain
longitudinal 1H2O relaxation in vivo", MRM 57:308 (2007); WM, GM T2 and muscle T1/T2 from
Stanisz et al., "T1, T2 relaxation and magnetization transfer in tissue at 3T", MRM 54:507 (2005)
(1.5 T values from the same paper); CSF from Lu et al., JMRI 22 (2005) and the common 4 s / 2 s
approximation; subcutaneous fat from Gold et al., AJR 183:343 (2004);
T2* of brain from Wansapura et al., JMRI 9:531 (1999) and Peters et al., MRI 25:748 (2007); PD from
Tofts (ed.), "Quantitative MRI of the Brain" (2003). Cortical bone has an ultrashort T2 and little
mobile water: it is dark on every conventional sequence.

Signal equations (magnitude, M0 ∝ PD):

- spin echo / turbo spin echo:  S = PD·(1 - e^(-TR/T1))·e^(-TE/T2)
- FLAIR (inversion recovery SE): S = PD·|1 - 2e^(-TI/T1) + e^(-TR/T1)|·e^(-TE/T2)
- spoiled gradient echo (FLASH): S = PD·sin a·(1 - E1)/(1 - cos a·E1)·e^(-TE/T2*),
  with E1 = e^(-TR/T1) and flip angle a

A voxel holding several tissues sums their signals weighted by their fractions (partial volume).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

FloatArray = NDArray[np.float32]
Sequence = Literal["T1_SE", "T2_TSE", "PD_TSE", "FLAIR", "T1_GRE"]
SEQUENCES: tuple[Sequence, ...] = ("T1_SE", "T2_TSE", "PD_TSE", "FLAIR", "T1_GRE")

# tissue → (T1 ms, T2 ms, T2* ms, PD) per field strength (tesla); see the module docstring.
TISSUE_PARAMETERS: dict[float, dict[str, tuple[float, float, float, float]]] = {
    1.5: {
        "wm": (646.0, 72.0, 66.0, 0.69),
        "gm": (1197.0, 95.0, 84.0, 0.80),
        "csf": (4000.0, 2000.0, 1500.0, 1.00),
        "fat": (343.0, 58.0, 50.0, 0.90),
        "muscle": (1008.0, 44.0, 30.0, 0.70),
        "bone": (1000.0, 1.0, 1.0, 0.05),
    },
    3.0: {
        "wm": (832.0, 69.0, 53.0, 0.69),
        "gm": (1331.0, 99.0, 66.0, 0.80),
        "csf": (4200.0, 2000.0, 1000.0, 1.00),
        "fat": (382.0, 133.0, 40.0, 0.90),
        "muscle": (1412.0, 50.0, 25.0, 0.70),
        "bone": (1000.0, 1.0, 1.0, 0.05),
    },
}

# sequence → ranges (min, max) of TR, TE (ms), TI (ms or None), flip angle (degrees or None), and
# pixel bandwidth (Hz/px), from typical clinical brain protocols at 1.5 T and 3 T.
PROTOCOL_RANGES: dict[str, dict[str, tuple[float, float] | None]] = {
    "T1_SE": {"tr": (400, 700), "te": (8, 20), "ti": None, "flip": None, "bw": (100, 250)},
    "T2_TSE": {"tr": (3000, 6000), "te": (80, 120), "ti": None, "flip": None, "bw": (120, 300)},
    "PD_TSE": {"tr": (2000, 4000), "te": (10, 30), "ti": None, "flip": None, "bw": (120, 300)},
    "FLAIR": {
        "tr": (8000, 11000),
        "te": (90, 140),
        "ti": (2000, 2800),
        "flip": None,
        "bw": (120, 300),
    },
    "T1_GRE": {"tr": (8, 25), "te": (2, 6), "ti": None, "flip": (8, 30), "bw": (130, 400)},
}


@dataclass(frozen=True)
class Protocol:
    """Acquisition parameters of one synthetic series (times in ms, flip in degrees, B0 in T)."""

    sequence: Sequence
    field_strength_t: float
    tr_ms: float
    te_ms: float
    ti_ms: float | None
    flip_deg: float | None
    pixel_bandwidth_hz: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_protocol(
    rng: np.random.Generator,
    *,
    sequence: Sequence | None = None,
    field_strength_t: float | None = None,
) -> Protocol:
    """Draw a protocol: a sequence, 1.5 T or 3 T, and TR/TE/TI/flip/bandwidth from its ranges.

    For FLAIR, TI is set near the CSF null at that TR (TI0 = T1·ln(2 / (1 + e^(-TR/T1)))),
    jittered by ±5 %, then clipped to the range: real protocols null CSF.
    """
    seq: Sequence = (
        sequence if sequence is not None else SEQUENCES[int(rng.integers(len(SEQUENCES)))]
    )
    b0 = field_strength_t if field_strength_t is not None else float(rng.choice([1.5, 3.0]))
    ranges = PROTOCOL_RANGES[seq]

    def draw(key: str) -> float | None:
        bounds = ranges[key]
        return None if bounds is None else float(rng.uniform(bounds[0], bounds[1]))

    tr, te, ti, flip, bw = draw("tr"), draw("te"), draw("ti"), draw("flip"), draw("bw")
    assert tr is not None and te is not None and bw is not None
    if seq == "FLAIR":
        t1_csf = TISSUE_PARAMETERS[_nearest_field(b0)]["csf"][0]
        null = t1_csf * math.log(2.0 / (1.0 + math.exp(-tr / t1_csf)))
        ti_bounds = ranges["ti"]
        assert ti_bounds is not None
        ti = float(np.clip(null * rng.uniform(0.95, 1.05), ti_bounds[0], ti_bounds[1]))
    return Protocol(
        seq,
        b0,
        round(tr, 1),
        round(te, 1),
        None if ti is None else round(ti, 1),
        None if flip is None else round(flip, 1),
        round(bw, 1),
    )


def _nearest_field(b0: float) -> float:
    return min(TISSUE_PARAMETERS, key=lambda f: abs(f - b0))


def signal(
    t1_ms: NDArray[Any] | float,
    t2_ms: NDArray[Any] | float,
    t2s_ms: NDArray[Any] | float,
    pd: NDArray[Any] | float,
    protocol: Protocol,
) -> FloatArray:
    """Magnitude signal of the protocol's sequence for given T1, T2, T2* (ms) and PD (any shape).

    Zero or negative T1/T2 (no tissue) gives zero signal. Returns float32 of the broadcast shape.
    """
    t1 = np.maximum(np.asarray(t1_ms, dtype=np.float64), 1e-3)
    t2 = np.maximum(np.asarray(t2_ms, dtype=np.float64), 1e-3)
    t2s = np.maximum(np.asarray(t2s_ms, dtype=np.float64), 1e-3)
    rho = np.asarray(pd, dtype=np.float64)
    e1 = np.exp(-protocol.tr_ms / t1)
    if protocol.sequence == "FLAIR":
        assert protocol.ti_ms is not None
        s = (
            rho
            * np.abs(1.0 - 2.0 * np.exp(-protocol.ti_ms / t1) + e1)
            * np.exp(-protocol.te_ms / t2)
        )
    elif protocol.sequence == "T1_GRE":
        alpha = math.radians(protocol.flip_deg if protocol.flip_deg is not None else 15.0)
        s = rho * math.sin(alpha) * (1 - e1) / (1 - math.cos(alpha) * e1)
        s = s * np.exp(-protocol.te_ms / t2s)
    else:
        s = rho * (1.0 - e1) * np.exp(-protocol.te_ms / t2)
    valid = (np.asarray(t1_ms) > 0) & (np.asarray(t2_ms) > 0)
    return np.asarray(np.where(valid, s, 0.0), dtype=np.float32)


def tissue_signal(tissue: str, protocol: Protocol) -> float:
    """The signal of a pure tissue (a key of :data:`TISSUE_PARAMETERS`) under the protocol."""
    t1, t2, t2s, pd = TISSUE_PARAMETERS[_nearest_field(protocol.field_strength_t)][tissue]
    return float(signal(t1, t2, t2s, pd, protocol))


def synthesize_tissue(
    maps: Mapping[str, NDArray[np.float32]], fat: NDArray[np.float32], protocol: Protocol
) -> FloatArray:
    """Image from tissue probability maps (``gm``, ``wm``, ``csf``, ``bone``, ``soft``), any shape.

    ``fat`` (same shape, 0..1) is the fat part of each voxel; it is taken out of ``soft``
    (the rest of soft tissue is muscle/skin) and out of ``bone`` (marrow), never out of brain.
    Returns float32 of the maps' shape, arbitrary units (PD·signal-equation scale).
    """
    soft = maps.get("soft")
    bone = maps.get("bone")
    shape = maps["gm"].shape
    soft = np.zeros(shape, np.float32) if soft is None else soft
    bone = np.zeros(shape, np.float32) if bone is None else bone
    fat_in_soft = np.minimum(fat, soft)
    fat_in_bone = np.minimum(fat - fat_in_soft, bone)
    fractions = {
        "gm": maps["gm"],
        "wm": maps["wm"],
        "csf": maps["csf"],
        "fat": fat_in_soft + fat_in_bone,
        "muscle": soft - fat_in_soft,
        "bone": bone - fat_in_bone,
    }
    image = np.zeros(shape, np.float32)
    for tissue, fraction in fractions.items():
        image += np.asarray(fraction, np.float32) * tissue_signal(tissue, protocol)
    return image


def synthesize_relaxometry(
    maps: Mapping[str, NDArray[np.float32]], protocol: Protocol
) -> FloatArray:
    """Image from measured maps ``t1_ms``, ``t2_ms``, ``pd`` (any shape); T2* taken as 0.7·T2."""
    return signal(maps["t1_ms"], maps["t2_ms"], 0.7 * maps["t2_ms"], maps["pd"], protocol)


def fat_from_tissue(
    maps: Mapping[str, NDArray[np.float32]], rng: np.random.Generator, *, smooth_px: float = 6.0
) -> FloatArray:
    """Fat fraction (0..1) for tissue maps: a smooth random 40-90 % of soft tissue + 30 % of bone.

    Subcutaneous scalp fat and orbital fat are parts of SPM's soft-tissue class; diploic marrow is
    part of bone. The random field (Gaussian-smoothed noise, ``smooth_px`` voxels) varies the fat
    share spatially. Returns float32 of the maps' shape.
    """
    soft = maps.get("soft", np.zeros_like(maps["gm"]))
    bone = maps.get("bone", np.zeros_like(maps["gm"]))
    field = ndimage.gaussian_filter(rng.standard_normal(soft.shape), smooth_px)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-12)
    share = 0.4 + 0.5 * field
    return np.asarray(np.clip(share * soft + 0.3 * bone, 0.0, 1.0), dtype=np.float32)


def head_mask(image: NDArray[np.floating[Any]]) -> NDArray[np.bool_]:
    """MISSION.md's head mask of a 2-D image (bool (H, W)): the simulator's own implementation."""
    from ml.simulate._common import head_and_reference

    head, _ = head_and_reference(np.asarray(image, dtype=np.float32)[None])
    return np.asarray(head[0], dtype=bool)


def fat_from_image(
    image: NDArray[np.float32], head: NDArray[np.bool_], *, shell_px: int
) -> FloatArray:
    """Fat estimate for a fixed-contrast 2-D image: bright voxels in the outer shell of the head.

    Scalp fat is the brightest thing on T1w (and bright on TSE); the shell is the head minus its
    erosion by ``shell_px`` pixels. Fraction ramps from 0 at the head's 70th percentile to 1 at
    its 98th. Returns float32 (H, W) in 0..1.
    """
    if not head.any():
        return np.zeros(image.shape, np.float32)
    inner = ndimage.binary_erosion(head, iterations=max(shell_px, 1))
    shell = head & ~inner
    lo, hi = np.percentile(image[head], [70, 98])
    ramp = np.clip((image - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    return np.asarray(ramp * shell, dtype=np.float32)


def voids_from_image(
    image: NDArray[np.float32], head: NDArray[np.bool_], *, max_depth_px: float
) -> FloatArray:
    """Air estimate (0/1, float32 (H, W)) for a fixed-contrast image: outside the head, and the
    voxels inside it below 8 % of the head's p99 (sinuses, mastoid air, cortical bone) within
    ``max_depth_px`` of the head's border, so that dark CSF deep in a T1w brain is not air."""
    if not head.any():
        return np.ones(image.shape, np.float32)
    dark = image < 0.08 * float(np.percentile(image[head], 99))
    shallow = ndimage.distance_transform_edt(head) <= max_depth_px
    return np.asarray((dark & head & shallow) | ~head, dtype=np.float32)


CHI_AIR_PPM = 9.4
"""Susceptibility of air relative to tissue (ppm): chi_air ≈ +0.36, chi_tissue ≈ -9.05 ppm (SI)."""
CHI_BONE_PPM = -2.1
"""Susceptibility of cortical bone relative to tissue (ppm): chi_bone ≈ -11.1 ppm (Hopkins 1997)."""


def susceptibility_map(air: NDArray[np.float32], bone: NDArray[np.float32]) -> FloatArray:
    """Δchi (ppm, relative to soft tissue) from air and bone fractions of the same shape."""
    return np.asarray(CHI_AIR_PPM * air + CHI_BONE_PPM * bone, dtype=np.float32)
