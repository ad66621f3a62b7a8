"""The signal equations give the contrasts radiologists know."""

from __future__ import annotations

import numpy as np
import pytest

from ml.data import contrast
from ml.data.contrast import Protocol, sample_protocol, tissue_signal

FIELDS = (1.5, 3.0)


def _protocol(sequence: contrast.Sequence, b0: float, **values: float | None) -> Protocol:
    base = sample_protocol(np.random.default_rng(0), sequence=sequence, field_strength_t=b0)
    return Protocol(**{**base.as_dict(), **values})


@pytest.mark.parametrize("b0", FIELDS)
def test_on_t1_weighted_spin_echo_white_matter_beats_grey_beats_csf(b0: float) -> None:
    p = _protocol("T1_SE", b0, tr_ms=500.0, te_ms=12.0)
    assert tissue_signal("wm", p) > tissue_signal("gm", p) > tissue_signal("csf", p)
    assert tissue_signal("fat", p) > tissue_signal("wm", p)


@pytest.mark.parametrize("b0", FIELDS)
def test_on_t1_gradient_echo_white_matter_beats_grey_beats_csf(b0: float) -> None:
    p = _protocol("T1_GRE", b0, tr_ms=20.0, te_ms=4.0, flip_deg=25.0)
    assert tissue_signal("wm", p) > tissue_signal("gm", p) > tissue_signal("csf", p)


@pytest.mark.parametrize("b0", FIELDS)
def test_on_t2_weighted_csf_is_brightest_and_grey_beats_white(b0: float) -> None:
    p = _protocol("T2_TSE", b0, tr_ms=4500.0, te_ms=100.0)
    signals = {t: tissue_signal(t, p) for t in ("wm", "gm", "csf", "muscle", "bone")}
    assert max(signals, key=signals.__getitem__) == "csf"
    assert signals["gm"] > signals["wm"]


@pytest.mark.parametrize("b0", FIELDS)
def test_flair_suppresses_csf_below_both_brain_tissues(b0: float) -> None:
    for seed in range(20):
        p = sample_protocol(np.random.default_rng(seed), sequence="FLAIR", field_strength_t=b0)
        csf = tissue_signal("csf", p)
        assert csf < 0.5 * tissue_signal("wm", p)
        assert tissue_signal("gm", p) > tissue_signal("wm", p) > csf
    t1_csf = contrast.TISSUE_PARAMETERS[b0]["csf"][0]
    null = t1_csf * np.log(2 / (1 + np.exp(-p.tr_ms / t1_csf)))
    at_null = Protocol(**{**p.as_dict(), "ti_ms": float(null)})
    assert tissue_signal("csf", at_null) < 1e-3
    assert tissue_signal("gm", p) > tissue_signal("wm", p) > csf
    # Without the inversion at the null, CSF would be brightest: the TI matters.
    assert tissue_signal("csf", Protocol(**{**p.as_dict(), "ti_ms": 200.0})) > csf


def test_proton_density_weighting_follows_water_content() -> None:
    p = _protocol("PD_TSE", 1.5, tr_ms=3500.0, te_ms=12.0)
    assert tissue_signal("gm", p) > tissue_signal("wm", p) > tissue_signal("bone", p)


def test_spin_echo_equation_matches_a_hand_computation() -> None:
    p = _protocol("T2_TSE", 3.0, tr_ms=2000.0, te_ms=80.0)
    expected = 0.8 * (1 - np.exp(-2000 / 1000)) * np.exp(-80 / 100)
    assert float(contrast.signal(1000.0, 100.0, 50.0, 0.8, p)) == pytest.approx(expected, rel=1e-5)


def test_drawn_protocols_stay_inside_their_ranges() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        p = sample_protocol(rng)
        ranges = contrast.PROTOCOL_RANGES[p.sequence]
        for key, value in (("tr", p.tr_ms), ("te", p.te_ms), ("bw", p.pixel_bandwidth_hz)):
            lo, hi = ranges[key] or (0, 0)
            assert lo - 0.1 <= value <= hi + 0.1
        assert (p.ti_ms is not None) == (p.sequence == "FLAIR")
        assert p.field_strength_t in FIELDS


def test_partial_volume_sums_tissue_signals_and_fat_comes_out_of_soft_tissue() -> None:
    p = _protocol("T1_SE", 1.5, tr_ms=500.0, te_ms=12.0)
    half = np.full((2, 2), 0.5, np.float32)
    zero = np.zeros((2, 2), np.float32)
    maps = {"gm": half, "wm": half, "csf": zero, "bone": zero, "soft": zero}
    image = contrast.synthesize_tissue(maps, zero, p)
    expected = 0.5 * tissue_signal("gm", p) + 0.5 * tissue_signal("wm", p)
    np.testing.assert_allclose(image, expected, rtol=1e-5)
    scalp = {"gm": zero, "wm": zero, "csf": zero, "bone": zero, "soft": np.ones((2, 2), np.float32)}
    fatty = contrast.synthesize_tissue(scalp, np.ones((2, 2), np.float32), p)
    lean = contrast.synthesize_tissue(scalp, zero, p)
    assert (fatty > lean).all()


def test_susceptibility_map_marks_air_positive_and_bone_negative() -> None:
    air = np.array([[1.0, 0.0]], np.float32)
    bone = np.array([[0.0, 1.0]], np.float32)
    chi = contrast.susceptibility_map(air, bone)
    assert chi[0, 0] > 5 and chi[0, 1] < 0
