"""Advice to the MR operator for each artifact type, with the series' own numbers.

Pure Python (no Django, no model): the scoring workers attach it to findings and the workstation
client prints it. Every sentence that can carry a number does: the operator should see what to
change and by how much ("chemical shift of 3.4 px at 3 T and 130 Hz/px; at 260 Hz/px it would be
1.7 px").
"""

from __future__ import annotations

from dataclasses import dataclass, field

GYROMAGNETIC_MHZ_PER_T = 42.577  # 1H
FAT_WATER_PPM = 3.5


@dataclass(frozen=True)
class AdviceHeader:
    """The acquisition values advice uses; any may be unknown (None)."""

    field_strength_t: float | None = None
    pixel_bandwidth_hz: float | None = None
    phase_encode: str = ""  # "ROW": phase along rows (array axis 1); "COL": along columns
    rows: int | None = None
    columns: int | None = None
    spacing_row_mm: float | None = None  # between rows (the column direction), DICOM order
    spacing_col_mm: float | None = None
    slice_thickness_mm: float | None = None
    te_ms: float | None = None
    tr_ms: float | None = None
    ti_ms: float | None = None
    percent_phase_fov: float | None = None


@dataclass(frozen=True)
class Advice:
    artifact: str
    summary: str
    actions: list[str] = field(default_factory=list)

    def text(self) -> str:
        return " ".join([self.summary, *self.actions])


def _n(value: float, digits: int = 1) -> str:
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def chemical_shift_px(field_strength_t: float, pixel_bandwidth_hz: float) -> float:
    """Fat-water displacement along frequency-encode: 3.5 ppm × γ × B0 / bandwidth (pixels)."""
    return FAT_WATER_PPM * GYROMAGNETIC_MHZ_PER_T * field_strength_t / pixel_bandwidth_hz


def _phase_words(h: AdviceHeader) -> tuple[str, str]:
    """(phase-encode direction, frequency-encode direction) in words."""
    if h.phase_encode == "ROW":
        return "along the rows (left–right on an axial slice)", "along the columns"
    if h.phase_encode == "COL":
        return "along the columns (anterior–posterior on an axial slice)", "along the rows"
    return "along phase-encode", "along frequency-encode"


def _fov_mm(h: AdviceHeader) -> tuple[float | None, float | None]:
    """(phase FOV, frequency FOV) in mm from matrix and spacing."""
    if None in (h.rows, h.columns, h.spacing_row_mm, h.spacing_col_mm):
        return None, None
    along_rows = float(h.columns) * float(h.spacing_col_mm)  # type: ignore[arg-type]
    along_cols = float(h.rows) * float(h.spacing_row_mm)  # type: ignore[arg-type]
    if h.phase_encode == "ROW":
        return along_rows, along_cols
    if h.phase_encode == "COL":
        return along_cols, along_rows
    return None, None


def _phase_lines(h: AdviceHeader) -> int | None:
    if h.phase_encode == "ROW":
        return h.columns
    if h.phase_encode == "COL":
        return h.rows
    return None


def advise(artifact: str, h: AdviceHeader) -> Advice:
    phase, frequency = _phase_words(h)
    b0, bw = h.field_strength_t, h.pixel_bandwidth_hz
    if artifact == "chemical_shift":
        if b0 and bw:
            px = chemical_shift_px(b0, bw)
            summary = (
                f"Chemical shift of {_n(px)} px {frequency} at {_n(b0)} T and {_n(bw, 0)} Hz/px; "
                f"at {_n(2 * bw, 0)} Hz/px it would be {_n(px / 2)} px."
            )
        else:
            summary = f"Chemical shift: fat displaced {frequency}."
        return Advice(artifact, summary, [
            "Raise the receiver bandwidth (this costs some SNR), add fat suppression, or swap "
            "phase and frequency to move the shift onto the other axis.",
        ])  # fmt: skip
    if artifact == "motion":
        lines = _phase_lines(h)
        # Every phase-encode line is a moment the head can move: fewer lines, less exposure.
        count = f" ({lines} phase-encode lines)" if lines else ""
        return Advice(artifact, f"Motion ghosts and blur {phase}{count}.", [
            "Immobilise the head with pads and explain the sequence length, shorten the "
            "acquisition, or repeat with a motion-robust sequence (PROPELLER/BLADE or radial).",
        ])  # fmt: skip
    if artifact == "ghosting":
        phase_fov, _ = _fov_mm(h)
        where = f"; an N/2 ghost sits {_n(phase_fov / 2, 0)} mm away" if phase_fov else ""
        return Advice(artifact, f"Periodic ghosts repeat {phase}{where}.", [
            "Use flow compensation, place a saturation band over the inflowing vessels, or swap "
            "the phase-encode direction so the ghosts fall off the region of interest.",
        ])  # fmt: skip
    if artifact == "aliasing":
        phase_fov, freq_fov = _fov_mm(h)
        pct = h.percent_phase_fov
        if phase_fov and pct and pct < 100:
            summary = (
                f"Wrap-around {phase}: the phase FOV is {_n(pct, 0)} % ({_n(phase_fov, 0)} mm); "
                f"raise it from {_n(pct, 0)} % to 100 % or add phase oversampling."
            )
        elif phase_fov:
            summary = (
                f"Wrap-around {phase}: anatomy outside the {_n(phase_fov, 0)} mm phase FOV folds "
                "back; enlarge the FOV or add phase oversampling."
            )
        else:
            summary = f"Wrap-around {phase}: enlarge the phase FOV or add phase oversampling."
        actions = ["Or swap phase and frequency so the longer extent is frequency-encoded."]
        if freq_fov and phase_fov and freq_fov > phase_fov:
            actions = [f"Or swap phase and frequency (the frequency FOV is {_n(freq_fov, 0)} mm)."]
        return Advice(artifact, summary, actions)
    if artifact == "susceptibility":
        parts = []
        if b0 and bw:
            per_ppm = GYROMAGNETIC_MHZ_PER_T * b0 / bw
            parts.append(
                f"{_n(per_ppm)} px of distortion per ppm {frequency} at {_n(b0)} T and "
                f"{_n(bw, 0)} Hz/px ({_n(per_ppm / 2)} px at {_n(2 * bw, 0)} Hz/px)"
            )
        summary = "Susceptibility voids and distortion near air, bone or metal" + (
            f": {parts[0]}." if parts else "."
        )
        actions = ["Use spin echo instead of gradient echo"]
        if h.te_ms:
            actions[0] += f", shorten TE from {_n(h.te_ms, 0)} ms"
        actions[0] += ", raise the bandwidth, and remove metal where possible."
        return Advice(artifact, summary, actions)
    if artifact == "zipper":
        return Advice(artifact, f"RF interference: a line {phase} at a fixed frequency.", [
            "Close the scanner room door, check the RF shielding and remove electronic devices "
            "(monitors, pumps) from the room; call service if it persists.",
        ])  # fmt: skip
    if artifact == "spike":
        return Advice(artifact, "A corrupt k-space sample: herringbone stripes across the image.", [
            "Repeat the sequence; report it to service (loose coil connections, static discharge "
            "or a failing component), especially if the spike rate rises.",
        ])  # fmt: skip
    if artifact == "gibbs":
        matrix = f" with a {h.rows}×{h.columns} matrix" if h.rows and h.columns else ""
        pixel = ""
        if h.spacing_row_mm and h.spacing_col_mm:
            pixel = f" ({_n(h.spacing_row_mm, 2)}×{_n(h.spacing_col_mm, 2)} mm pixels)"
        return Advice(artifact, f"Truncation ringing at sharp edges{matrix}{pixel}.", [
            "Raise the acquired matrix (e.g. double it along phase-encode) or apply an "
            "apodisation filter.",
        ])  # fmt: skip
    if artifact == "bias_field":
        actions = ["Check that the coil is connected and well placed, and use prescan normalise."]
        if b0 and b0 >= 2.5:
            actions.append(f"At {_n(b0)} T, dielectric pads reduce B1 shading.")
        return Advice(artifact, "Smooth intensity shading across the image.", actions)
    if artifact == "noise":
        voxel = ""
        if h.spacing_row_mm and h.spacing_col_mm and h.slice_thickness_mm:
            voxel = (f" with {_n(h.spacing_row_mm, 2)}×{_n(h.spacing_col_mm, 2)}×"
                     f"{_n(h.slice_thickness_mm)} mm voxels")  # fmt: skip
        where = f" at {_n(b0)} T" if b0 else ""
        actions = ["Double the averages (+41 % SNR, twice the time), use larger voxels"]
        if bw:
            actions[0] += (
                f", halve the bandwidth from {_n(bw, 0)} to {_n(bw / 2, 0)} Hz/px (+41 % SNR)"
            )
        actions[0] += ", and check the right coil is selected."
        return Advice(artifact, f"Low signal-to-noise{where}{voxel}.", actions)
    raise ValueError(f"unknown artifact type {artifact!r}")
