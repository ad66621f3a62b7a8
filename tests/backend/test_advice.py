"""Operator advice per artifact type, with the series' own header values (a table test)."""

from __future__ import annotations

import pytest

from backend.scoring.advice import AdviceHeader, advise, chemical_shift_px
from ml import ARTIFACT_TYPES

AXIAL_3T = AdviceHeader(
    field_strength_t=3.0, pixel_bandwidth_hz=130.0, phase_encode="ROW", rows=384, columns=512,
    spacing_row_mm=0.45, spacing_col_mm=0.45, slice_thickness_mm=5.0, te_ms=90.0, tr_ms=4000.0,
    percent_phase_fov=75.0,
)  # fmt: skip
SAGITTAL_15T = AdviceHeader(
    field_strength_t=1.5, pixel_bandwidth_hz=260.0, phase_encode="COL", rows=256, columns=256,
    spacing_row_mm=1.0, spacing_col_mm=1.0, slice_thickness_mm=1.0, te_ms=4.0, tr_ms=2000.0,
)  # fmt: skip


def test_the_chemical_shift_formula():
    assert chemical_shift_px(3.0, 130.0) == pytest.approx(3.439, abs=1e-3)
    assert chemical_shift_px(1.5, 260.0) == pytest.approx(0.860, abs=1e-3)


@pytest.mark.parametrize(
    ("artifact", "header", "expected"),
    [
        (
            "chemical_shift",
            AXIAL_3T,
            ["3.4 px", "3 T", "130 Hz/px", "at 260 Hz/px it would be 1.7 px"],
        ),
        ("chemical_shift", SAGITTAL_15T, ["0.9 px", "1.5 T", "260 Hz/px", "along the rows"]),
        ("motion", AXIAL_3T, ["along the rows", "512 phase-encode lines", "PROPELLER"]),
        ("ghosting", AXIAL_3T, ["along the rows", "115 mm away", "saturation band"]),
        ("aliasing", AXIAL_3T, ["75 %", "230 mm", "from 75 % to 100 %"]),
        ("aliasing", SAGITTAL_15T, ["along the columns", "256 mm phase FOV"]),
        ("susceptibility", AXIAL_3T, ["1 px of distortion per ppm", "shorten TE from 90 ms"]),
        ("susceptibility", SAGITTAL_15T, ["0.2 px of distortion per ppm", "0.1 px at 520 Hz/px"]),
        ("zipper", AXIAL_3T, ["along the rows", "room door", "shielding"]),
        ("spike", AXIAL_3T, ["herringbone", "service"]),
        ("gibbs", AXIAL_3T, ["384×512 matrix", "0.45×0.45 mm"]),
        ("bias_field", AXIAL_3T, ["prescan normalise", "At 3 T, dielectric pads"]),
        ("noise", SAGITTAL_15T, ["1.5 T", "1×1×1 mm voxels", "from 260 to 130 Hz/px"]),
    ],
)
def test_each_type_gets_advice_with_the_series_numbers(artifact, header, expected):
    text = advise(artifact, header).text()
    for fragment in expected:
        assert fragment in text, (fragment, text)


def test_bias_field_at_1_5_t_does_not_suggest_dielectric_pads():
    assert "dielectric" not in advise("bias_field", SAGITTAL_15T).text()


@pytest.mark.parametrize("artifact", ARTIFACT_TYPES)
def test_every_type_has_advice_even_without_header_values(artifact):
    advice = advise(artifact, AdviceHeader())
    assert advice.summary and "None" not in advice.text()


def test_an_unknown_type_is_an_error():
    with pytest.raises(ValueError, match="unknown artifact"):
        advise("banana", AXIAL_3T)
