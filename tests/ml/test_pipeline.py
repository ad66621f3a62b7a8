"""The scoring pipeline: geometry (padding, phase-encode canonicalisation), shapes, caching."""

from __future__ import annotations

import numpy as np
import pytest

from ml import ARTIFACT_TYPES
from ml.model.preprocess import canonical, header_vector, normalise, pad_to_stride
from ml.simulate.header import AcquisitionHeader
from tests.gpu_ops.phantoms import BACKEND_PARAMS, head_phantom


class ThresholdModel:
    """A stand-in network: every mask channel marks canonical pixels brighter than 0.5."""

    def predict_on_batch(self, inputs):
        image = inputs["image"]
        masks = np.repeat((image > 0.5).astype(np.float32), len(ARTIFACT_TYPES), axis=-1)
        n = len(image)
        return {
            "masks": masks,
            "presence": np.full((n, len(ARTIFACT_TYPES)), 0.25, np.float32),
            "suitability": np.full((n, 1), 0.75, np.float32),
        }


def _asymmetric(rows=40, cols=72):
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (rows, cols)).astype(np.float32)
    image[: rows // 3, : cols // 4] = 3.0  # a bright corner marks the orientation
    return image


def test_canonical_orientation_puts_phase_encode_on_axis_one_and_is_its_own_inverse():
    image = _asymmetric()
    assert canonical(image, "ROW") is image
    col = canonical(image, "COL")
    assert col.shape == (72, 40)
    np.testing.assert_array_equal(canonical(col, "COL"), image)
    with pytest.raises(ValueError):
        canonical(image, "DIAGONAL")


def test_padding_reaches_a_multiple_of_sixteen_and_keeps_the_pixels():
    batch = np.ones((2, 50, 70), np.float32)
    padded = pad_to_stride(batch)
    assert padded.shape == (2, 64, 80)
    assert padded[:, :50, :70].all() and not padded[:, 50:].any() and not padded[:, :, 70:].any()


def test_normalise_puts_the_head_p99_at_one_whatever_the_units():
    image, _ = head_phantom(64)
    a, b = normalise(image * 3000.0), normalise(image)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert not normalise(np.zeros((8, 8))).any()


def test_the_header_vector_follows_phase_encode_not_array_axes():
    common = dict(field_strength_t=3.0, pixel_bandwidth_hz=130, te_ms=15, tr_ms=600, ti_ms=None)
    row = header_vector(pixel_spacing_mm=(0.8, 1.2), phase_encode="ROW", **common)
    col = header_vector(pixel_spacing_mm=(1.2, 0.8), phase_encode="COL", **common)
    np.testing.assert_array_equal(row, col)
    assert row[4] == 0.0  # no inversion time
    with_ti = header_vector(
        pixel_spacing_mm=(1, 1), phase_encode="ROW", **{**common, "ti_ms": 2400}
    )
    assert with_ti[4] == 1.0 and with_ti[5] > 0


@pytest.mark.parametrize("phase_encode", ["ROW", "COL"])
def test_masks_come_back_on_the_original_grid_for_either_phase_encode(phase_encode):
    from ml.pipeline import ScoringPipeline

    pipeline = ScoringPipeline(ThresholdModel(), weights=None)
    image = _asymmetric()
    header = AcquisitionHeader(rows=40, columns=72, phase_encode=phase_encode)
    masks, presence, suitability = pipeline.score_arrays([image, image * 2], [header, header])
    assert masks.shape == (2, len(ARTIFACT_TYPES), 40, 72) and masks.dtype == np.uint8
    expected = (normalise(image) > 0.5).astype(np.uint8)
    for k in range(len(ARTIFACT_TYPES)):
        np.testing.assert_array_equal(masks[0, k], expected)
        np.testing.assert_array_equal(masks[1, k], expected)
    assert presence.shape == (2, len(ARTIFACT_TYPES)) and presence.dtype == np.float32
    np.testing.assert_allclose(suitability, [0.75, 0.75])


def test_slices_of_different_sizes_are_refused():
    from ml.pipeline import ScoringError, ScoringPipeline

    pipeline = ScoringPipeline(ThresholdModel(), weights=None)
    headers = [AcquisitionHeader(rows=40, columns=72), AcquisitionHeader(rows=72, columns=40)]
    with pytest.raises(ScoringError):
        pipeline.score_arrays([_asymmetric(), _asymmetric().T], headers)
    with pytest.raises(ScoringError):
        pipeline.score_datasets([])


def test_resolving_weights_names_the_shipped_files(tmp_path):
    from ml.pipeline import SHIPPED, resolve_weights

    assert resolve_weights(None) == SHIPPED["full"]
    assert resolve_weights("pruned") == SHIPPED["pruned"]
    assert resolve_weights(tmp_path / "m.keras") == tmp_path / "m.keras"
    assert SHIPPED["full"].is_file()


def test_per_type_thresholds_beside_the_weights_are_applied(tmp_path):
    import json

    from ml.pipeline import ScoringPipeline

    thresholds = {name: 0.5 for name in ARTIFACT_TYPES}
    thresholds["noise"] = 2.0  # above any probability: never marked
    (tmp_path / "m.thresholds.json").write_text(json.dumps({"thresholds": thresholds}))
    pipeline = ScoringPipeline(ThresholdModel(), weights=tmp_path / "m.onnx")
    image = _asymmetric()
    masks, _, _ = pipeline.score_arrays([image], [AcquisitionHeader(rows=40, columns=72)])
    assert masks[0, ARTIFACT_TYPES.index("motion")].any()
    assert not masks[0, ARTIFACT_TYPES.index("noise")].any()


@pytest.mark.parametrize("device", BACKEND_PARAMS)
@pytest.mark.parametrize("phase_encode", ["ROW", "COL"])
def test_the_pre_and_post_processing_device_does_not_change_the_result(device, phase_encode):
    """NumPy and (where a GPU is present) CuPy give the pipeline the same masks."""
    from ml.pipeline import ScoringPipeline

    image = _asymmetric()
    header = AcquisitionHeader(rows=40, columns=72, phase_encode=phase_encode)
    on_host = ScoringPipeline(ThresholdModel(), weights=None, device="numpy")
    on_device = ScoringPipeline(ThresholdModel(), weights=None, device=device)
    expected = on_host.score_arrays([image, image * 5], [header, header])
    got = on_device.score_arrays([image, image * 5], [header, header])
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert isinstance(got[0], np.ndarray)  # results come back to the host
