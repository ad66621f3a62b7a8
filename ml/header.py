"""The acquisition values a simulator needs, read from a DICOM header or given by hand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

GAMMA_HZ_PER_T = 42.577e6
"""Proton gyromagnetic ratio over 2 pi, Hz/T."""


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
    def from_dataset(cls, ds: Any) -> AcquisitionHeader:
        """Build from a pydicom ``Dataset`` of an MR image; missing optional values get defaults.

        Rows and Columns are required. PixelBandwidth, MagneticFieldStrength,
        InPlanePhaseEncodingDirection, PixelSpacing, EchoTime, RepetitionTime and InversionTime
        are read when present.
        """

        def number(keyword: str, default: float | None) -> float | None:
            value = getattr(ds, keyword, None)
            if value is None or value == "":
                return default
            return float(value)

        direction = str(getattr(ds, "InPlanePhaseEncodingDirection", "") or "ROW").upper()
        spacing = getattr(ds, "PixelSpacing", None)
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
