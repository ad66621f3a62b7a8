"""The acquisition values a simulator needs, read from a DICOM header or given by hand.

A classic MR image keeps them at the top level of its header; an Enhanced MR image (one file of
many frames, PS3.3 A.36.2) keeps them in functional groups: a frame's own
(PerFrameFunctionalGroupsSequence) or those all its frames share
(SharedFunctionalGroupsSequence). :func:`frame_values` reads either, per frame.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

GAMMA_HZ_PER_T = 42.577e6
"""Proton gyromagnetic ratio over 2 pi, Hz/T."""

FUNCTIONAL_GROUPS: dict[str, tuple[str, str]] = {
    "PixelSpacing": ("PixelMeasuresSequence", "PixelSpacing"),
    "SliceThickness": ("PixelMeasuresSequence", "SliceThickness"),
    "InPlanePhaseEncodingDirection": ("MRFOVGeometrySequence", "InPlanePhaseEncodingDirection"),
    "RepetitionTime": ("MRTimingAndRelatedParametersSequence", "RepetitionTime"),
    "FlipAngle": ("MRTimingAndRelatedParametersSequence", "FlipAngle"),
    "EchoTime": ("MREchoSequence", "EffectiveEchoTime"),
    "InversionTime": ("MRModifierSequence", "InversionTimes"),
    "PixelBandwidth": ("MRImagingModifierSequence", "PixelBandwidth"),
    "RescaleSlope": ("PixelValueTransformationSequence", "RescaleSlope"),
    "RescaleIntercept": ("PixelValueTransformationSequence", "RescaleIntercept"),
    "ImagePositionPatient": ("PlanePositionSequence", "ImagePositionPatient"),
    "ImageOrientationPatient": ("PlaneOrientationSequence", "ImageOrientationPatient"),
}
"""Where an Enhanced MR image keeps each classic header value: (functional group macro, its
attribute). EchoTime is the frame's EffectiveEchoTime; InversionTime its first InversionTimes."""

HEADER_KEYWORDS: tuple[str, ...] = (*FUNCTIONAL_GROUPS, "MagneticFieldStrength")
"""What :func:`frame_values` reads (MagneticFieldStrength is at the top level of both kinds)."""

# Values of which one is taken when a header holds several (an Enhanced MR image lists its
# inversion times; a classic one may give multi-valued EchoTime or RepetitionTime by mistake).
_SINGLE = frozenset(HEADER_KEYWORDS) - {
    "PixelSpacing",
    "ImagePositionPatient",
    "ImageOrientationPatient",
}


# What AcquisitionHeader.from_dataset reads.
_HEADER_FIELDS = (
    "InPlanePhaseEncodingDirection",
    "PixelSpacing",
    "PixelBandwidth",
    "MagneticFieldStrength",
    "EchoTime",
    "RepetitionTime",
    "InversionTime",
)


def frame_count(ds: Any) -> int:
    """NumberOfFrames of ``ds`` (1 for a classic single-frame image or an unreadable value)."""
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def frame_values(
    ds: Any, frame: int = 0, keywords: Iterable[str] = HEADER_KEYWORDS
) -> dict[str, Any]:
    """The values of ``keywords`` (of :data:`HEADER_KEYWORDS`) for frame ``frame`` (0-based) of
    ``ds``: from the frame's own functional groups, then the shared ones, then the top level;
    None where absent or empty. A value of :data:`_SINGLE` that is multi-valued gives its first
    value."""
    groups = []  # the functional group items to look in, the frame's own first
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and 0 <= frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    values: dict[str, Any] = {}
    for keyword in keywords:
        value = None
        place = FUNCTIONAL_GROUPS.get(keyword)
        if place is not None:
            for group in groups:
                macro = group.get(place[0])
                value = macro[0].get(place[1]) if macro else None
                if value is not None and not _empty(value):
                    break
                value = None
        if value is None:
            value = ds.get(keyword)
        if value is not None and keyword in _SINGLE and _many(value):
            value = value[0] if len(value) else None
        values[keyword] = None if value is None or _empty(value) else value
    return values


def _many(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def _empty(value: Any) -> bool:
    return (isinstance(value, str) and not value.strip()) or (_many(value) and len(value) == 0)


@dataclass(frozen=True)
class AcquisitionHeader:
    """In-plane acquisition geometry and timing of one MR series.

    ``phase_encode``: DICOM InPlanePhaseEncodingDirection; ``"ROW"`` means phase-encode runs along
    the rows (array axis 1, horizontal), ``"COL"`` along the columns (array axis 0, vertical).
    ``pixel_bandwidth_hz``: receiver bandwidth per pixel along frequency-encode, Hz/px.
    ``field_strength_t``: B0, tesla. ``rows``/``columns``: matrix (array shape ``(rows, columns)``).
    ``pixel_spacing_mm``: DICOM PixelSpacing (row spacing = along axis 0, column spacing = along
    axis 1), mm. ``te_ms``, ``tr_ms``, ``ti_ms``: echo, repetition and inversion times, ms.
    """

    rows: int
    columns: int
    phase_encode: Literal["ROW", "COL"] = "ROW"
    pixel_bandwidth_hz: float = 200.0
    field_strength_t: float = 3.0
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0)
    te_ms: float = 20.0
    tr_ms: float = 500.0
    ti_ms: float | None = None

    def __post_init__(self) -> None:
        if self.phase_encode not in ("ROW", "COL"):
            raise ValueError(f"phase_encode must be 'ROW' or 'COL', not {self.phase_encode!r}")
        if self.rows <= 0 or self.columns <= 0:
            raise ValueError("rows and columns must be positive")
        if self.pixel_bandwidth_hz <= 0 or self.field_strength_t <= 0:
            raise ValueError("pixel bandwidth and field strength must be positive")

    @property
    def phase_axis(self) -> int:
        """Array axis of an ``(H, W)`` slice along which phase-encode runs: 1 ROW, 0 COL."""
        return 1 if self.phase_encode == "ROW" else 0

    @property
    def frequency_axis(self) -> int:
        """Array axis of frequency-encode (readout): the other in-plane axis."""
        return 1 - self.phase_axis

    @classmethod
    def from_dataset(cls, ds: Any, frame: int = 0) -> AcquisitionHeader:
        """Build from a pydicom ``Dataset`` of an MR image (of its frame ``frame``, 0-based, for
        an Enhanced MR image: :func:`frame_values`); missing optional values get defaults.

        Rows and Columns are required. PixelBandwidth, MagneticFieldStrength,
        InPlanePhaseEncodingDirection, PixelSpacing, EchoTime, RepetitionTime and InversionTime
        are read when present.
        """
        values = frame_values(ds, frame, _HEADER_FIELDS)

        def number(keyword: str, default: float | None) -> float | None:
            value = values[keyword]
            return default if value is None else float(value)

        direction = str(values["InPlanePhaseEncodingDirection"] or "ROW").upper()
        spacing = values["PixelSpacing"]
        pixel_spacing = (float(spacing[0]), float(spacing[1])) if spacing else (1.0, 1.0)
        return cls(
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            phase_encode="COL" if direction == "COL" else "ROW",
            pixel_bandwidth_hz=number("PixelBandwidth", 200.0) or 200.0,
            field_strength_t=number("MagneticFieldStrength", 3.0) or 3.0,
            pixel_spacing_mm=pixel_spacing,
            te_ms=number("EchoTime", 20.0) or 20.0,
            tr_ms=number("RepetitionTime", 500.0) or 500.0,
            ti_ms=number("InversionTime", None),
        )
