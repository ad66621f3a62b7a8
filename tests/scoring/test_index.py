"""The suitability index: one function with and without a region of interest."""

from __future__ import annotations

import numpy as np

from backend.scoring.index import (
    FindingShare,
    polygon_area,
    polygon_raster,
    series_reason,
    series_suitability,
    slice_reason,
    slice_suitability,
)


def _square(r0, r1, c0, c1, shape=(64, 64)):
    mask = np.zeros(shape, np.uint8)
    mask[r0:r1, c0:c1] = 1
    return mask


def test_without_a_region_the_index_is_the_models_own():
    mask = _square(0, 16, 0, 16)
    assert slice_suitability(model_suitability=0.2, masks=[mask]) == 0.2
    assert slice_suitability(model_suitability=0.2, masks=[mask], region=None) == 0.2
    assert slice_suitability(model_suitability=0.7, masks=[]) == 0.7


def test_an_artifact_outside_the_region_leaves_the_slice_diagnostic_and_one_inside_does_not():
    artifact = _square(0, 16, 0, 16)  # top left
    elsewhere = _square(40, 64, 40, 64).astype(bool)
    inside = _square(0, 20, 0, 20).astype(bool)
    assert slice_suitability(model_suitability=0.2, masks=[artifact], region=elsewhere) == 1.0
    assert slice_suitability(model_suitability=0.2, masks=[artifact], region=inside) == 0.2


def test_a_region_the_artifact_covers_thinly_takes_a_share_of_the_doubt():
    # An artifact over a quarter of the image that covers an eighth of the region: half the
    # image's density, so half the model's doubt.
    artifact = _square(0, 32, 0, 32)
    region = np.zeros((64, 64), bool)
    region[28:44, 0:64] = True  # 16 rows; the artifact covers 4 of them on half the width
    value = slice_suitability(model_suitability=0.2, masks=[artifact], region=region)
    density_region = (artifact.astype(bool) & region).sum() / region.sum()
    assert density_region == 0.125
    assert np.isclose(value, 1 - 0.8 * 0.5)


def test_doubt_the_model_cannot_place_is_not_cleared_by_a_region():
    region = _square(0, 8, 0, 8).astype(bool)
    empty = np.zeros((64, 64), np.uint8)
    assert slice_suitability(model_suitability=0.3, masks=[empty], region=region) == 0.3


def test_the_series_index_weights_diagnostic_share_and_mean_alike():
    assert series_suitability([]) is None
    assert series_suitability([1.0, 1.0]) == 1.0
    assert np.isclose(series_suitability([1.0, 0.0]), 0.5 * 0.5 + 0.5 * 0.5)


def test_reasons_name_the_dominant_artifact_and_the_area():
    reason = slice_reason(
        suitability=0.2,
        findings=[FindingShare("motion", 0.18, 0.9), FindingShare("noise", 0.05, 0.99)],
        phase_encode="ROW",
        area="region of interest",
    )
    assert reason == (
        "Motion over 18% of the region of interest (phase-encode along the rows): not diagnostic."
    )
    assert slice_reason(suitability=0.9, findings=[], phase_encode="COL") == (
        "No artifact found in the head: diagnostic."
    )
    assert series_reason([(1, 0.9, "ok"), (2, 0.1, "bad")], quarantined=1) == (
        "1 of 2 slices not diagnostic; worst slice 2: bad 1 slice quarantined."
    )


def test_a_polygon_is_rasterised_on_pixel_centres():
    square = [[2, 2], [5, 2], [5, 5], [2, 5]]
    raster = polygon_raster(square, 8, 10)
    assert raster.shape == (8, 10)
    assert raster[2:6, 2:6].all() and raster.sum() == 16
    assert polygon_area(square) == 9.0
    assert polygon_area([[0, 0], [4, 4], [8, 8]]) == 0.0
