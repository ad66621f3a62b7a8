"""Working resolution: slices resampled to a working grid for the network and the mask
probabilities back to the original grid; the size travels with the model (Keras graph, ONNX
metadata, thresholds sidecar); a model without one still runs at native resolution."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml import ARTIFACT_TYPES
from ml.model.preprocess import (
    normalise,
    resample,
    upsample_probabilities,
    working_shape,
)
from ml.simulate.header import AcquisitionHeader

K = len(ARTIFACT_TYPES)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from ml.__main__ import main

    out = tmp_path_factory.mktemp("data")
    assert main(["dataset", "--out", str(out), "--slices", "12", "--seed", "5", "--quiet"]) == 0
    return out


class RecordingThresholdModel:
    """A stand-in network at a working size: every mask channel is the canonical input image
    itself (a probability), and it records the input shapes it was given."""

    def __init__(self, working_size):
        self.working_size = working_size
        self.shapes = []

    def predict_on_batch(self, inputs):
        image = inputs["image"]
        self.shapes.append(image.shape[1:3])
        n = len(image)
        return {
            "masks": np.repeat(np.clip(image, 0, 1), K, axis=-1).astype(np.float32),
            "presence": np.full((n, K), 0.25, np.float32),
            "suitability": np.full((n, 1), 0.75, np.float32),
        }


def _blocky(rows, cols):
    """A slice of large constant blocks (so resampling there and back keeps most pixels):
    a bright off-centre rectangle marks the orientation."""
    image = np.full((rows, cols), 0.2, np.float32)
    image[rows // 8 : rows // 2, cols // 10 : cols // 3] = 1.0
    return image


def test_the_working_grid_keeps_the_aspect_in_multiples_of_sixteen():
    assert working_shape(384, 512, 256) == (192, 256)
    assert working_shape(512, 384, 256) == (256, 192)
    assert working_shape(256, 320, 256) == (208, 256)  # 204.8 rounded to a multiple of 16
    assert working_shape(128, 128, 256) == (256, 256)  # a small slice is interpolated up
    assert working_shape(130, 97, 256) == (256, 192)
    assert working_shape(2, 500, 64) == (16, 64)  # never below one stride
    with pytest.raises(ValueError):
        working_shape(100, 100, 250)
    with pytest.raises(ValueError):
        working_shape(0, 100, 256)


def test_area_resampling_averages_blocks_and_keeps_a_mask_area():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (64, 96)).astype(np.float32)
    halved = resample(image, (32, 48))
    np.testing.assert_allclose(halved, image.reshape(32, 2, 48, 2).mean(axis=(1, 3)), atol=1e-5)
    # Any ratio: the mask's area fraction is kept (soft targets), values stay in [0, 1].
    mask = (rng.uniform(0, 1, (3, 300, 203)) > 0.7).astype(np.uint8)
    fraction = resample(mask, (256, 176))
    assert fraction.shape == (3, 256, 176)
    assert fraction.min() >= -1e-6 and fraction.max() <= 1 + 1e-6
    np.testing.assert_allclose(fraction.mean(axis=(1, 2)), mask.mean(axis=(1, 2)), atol=1e-4)
    # Growing axes interpolate linearly: a constant stays constant.
    np.testing.assert_allclose(
        resample(np.full((13, 7), 0.4, np.float32), (32, 16)), 0.4, atol=1e-6
    )


def test_probabilities_go_back_bilinearly_to_any_grid():
    probs = np.zeros((1, 4, 4, 2), np.float32)
    probs[0, :, 2:, 0] = 1.0
    back = upsample_probabilities(probs, (8, 8))
    assert back.shape == (1, 8, 8, 2)
    np.testing.assert_array_equal(back[0, :, :3, 0], 0.0)
    np.testing.assert_array_equal(back[0, :, 5:, 0], 1.0)
    np.testing.assert_allclose(back[0, 0, 3:5, 0], [0.25, 0.75])  # half-pixel centres
    assert upsample_probabilities(probs, (3, 5)).shape == (1, 3, 5, 2)


@pytest.mark.parametrize("rows, cols", [(130, 97), (384, 512)])
@pytest.mark.parametrize("phase_encode", ["ROW", "COL"])
def test_masks_come_back_on_the_original_grid_from_the_working_grid(rows, cols, phase_encode):
    from ml.pipeline import ScoringPipeline

    model = RecordingThresholdModel(64)
    pipeline = ScoringPipeline(model, weights=None)
    assert pipeline.working_size == 64
    image = _blocky(rows, cols)
    header = AcquisitionHeader(rows=rows, columns=cols, phase_encode=phase_encode)
    masks, presence, suitability = pipeline.score_arrays([image, image * 3], [header, header])
    assert masks.shape == (2, K, rows, cols) and masks.dtype == np.uint8
    canonical_shape = (rows, cols) if phase_encode == "ROW" else (cols, rows)
    assert model.shapes == [working_shape(*canonical_shape, 64)]  # the network saw the grid
    expected = normalise(image) >= 0.5  # the stand-in marks bright pixels of the slice
    for k in (0, K - 1):
        agree = (masks[0, k].astype(bool) == expected).mean()
        assert agree > 0.97, agree  # only the resampled block edges may differ
        np.testing.assert_array_equal(masks[1, k], masks[0, k])
    np.testing.assert_allclose(suitability, [0.75, 0.75])
    assert presence.shape == (2, K)


def test_a_model_without_a_working_size_still_runs_at_native_resolution():
    from ml.model import network
    from ml.pipeline import ScoringPipeline

    model = network.build_model(network.default_widths(base=2, depth=2), depth=2)
    assert network.working_size(model) is None
    pipeline = ScoringPipeline(model, weights=None)
    assert pipeline.working_size is None
    header = AcquisitionHeader(rows=130, columns=97, phase_encode="COL")
    image = _blocky(130, 97)
    masks, _, _ = pipeline.score_arrays([image], [header])
    assert masks.shape == (1, K, 130, 97)
    # Native: the network's own probabilities on the padded canonical slice, thresholded.
    canon = normalise(image.T)
    padded = np.zeros((1, 112, 144, 1), np.float32)
    padded[0, :97, :130, 0] = canon
    probs = np.asarray(model.predict_on_batch({"image": padded, "header": np.asarray(
        [pipeline_header(header)])})["masks"])[0, :97, :130]  # fmt: skip
    np.testing.assert_array_equal(masks[0], np.moveaxis(probs >= 0.5, -1, 0).transpose(0, 2, 1))


def pipeline_header(header):
    from ml.model.preprocess import header_vector_from

    return header_vector_from(header)


def test_the_working_size_travels_with_the_keras_file_the_onnx_export_and_the_sidecar(tmp_path):
    from ml.__main__ import main
    from ml.model import network
    from ml.pipeline import ScoringPipeline

    plain = network.build_model(network.default_widths(base=2, depth=2), depth=2)
    marked = network.with_working_size(plain, 32)
    assert network.working_size(marked) == 32
    # Mask modes keep the working size, and a save/load keeps both.
    served = network.with_mask_modes(marked, ["whole"] + ["pixel"] * (K - 1))
    path = tmp_path / "m.keras"
    served.save(path)
    loaded = network.load(path)
    assert network.working_size(loaded) == 32 and network.mask_modes(loaded)[0] == "whole"
    assert network.working_size(network.with_working_size(loaded, None)) is None
    # The Keras file alone: the pipeline reads the size from the graph.
    assert ScoringPipeline.load(path).working_size == 32
    # ONNX: from the file's metadata (no sidecar), the same masks as Keras.
    assert main(["export", str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    onnx = ScoringPipeline.load(tmp_path / "m.onnx")
    assert onnx.working_size == 32
    image = _blocky(70, 45)
    header = AcquisitionHeader(rows=70, columns=45, phase_encode="ROW")
    a = ScoringPipeline.load(path).score_arrays([image], [header])
    b = onnx.score_arrays([image], [header])
    assert a[0].shape == b[0].shape == (1, K, 70, 45)
    assert (a[0] == b[0]).mean() > 0.999
    np.testing.assert_allclose(a[2], b[2], atol=1e-4)
    # The sidecar names the size for runtimes without another place for it (LiteRT).
    sidecar = {"thresholds": {n: 0.5 for n in ARTIFACT_TYPES}, "working_size": 48}
    (tmp_path / "m.thresholds.json").write_text(json.dumps(sidecar))
    assert ScoringPipeline.load(tmp_path / "m.onnx").working_size == 48


def test_whole_slice_batches_hold_one_working_shape_with_soft_targets_and_slice_labels(
    data_dir,
):
    from ml.model.data import draw_whole_batch, load_split, shape_groups, whole_batch

    data = data_dir
    native = load_split(data, "train")
    split = load_split(data, "train", working=32)
    assert split.working == 32 and len(split) == len(native)
    np.testing.assert_array_equal(split.present, native.present)
    for image, mask, original in zip(split.images, split.masks, native.masks, strict=True):
        assert image.shape == working_shape(*original.shape[1:], 32)
        assert mask.shape == (K, *image.shape) and mask.dtype == np.uint8
        # The soft target keeps each type's area share of the slice (1/255 steps).
        np.testing.assert_allclose(mask.mean(axis=(1, 2)) / 255, original.mean(axis=(1, 2)),
                                   atol=0.01)  # fmt: skip
    groups = shape_groups(split)
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = draw_whole_batch(split, groups, 4, rng)
        x, y = whole_batch(split, idx, rng, augment=True)
        assert len({split.images[i].shape for i in idx}) == 1
        assert x["image"].shape[1:3] == split.images[idx[0]].shape
        assert 0 <= y["masks"].min() and y["masks"].max() <= 1
        np.testing.assert_array_equal(y["presence"], split.present[idx].astype(np.float32))
    with pytest.raises(ValueError):
        whole_batch(native, idx, rng, augment=False)


def test_a_working_grid_split_is_read_back_from_its_cache_unchanged(data_dir):
    from ml.model.data import load_split

    data = data_dir
    first = load_split(data, "train", working=48)
    caches = list(data.glob(".working-48-train-*.npz"))
    assert len(caches) == 1
    again = load_split(data, "train", working=48)
    assert len(again) == len(first) and again.working == 48
    for a, b in zip(first.images + first.masks, again.images + again.masks, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.present, again.present)
    np.testing.assert_array_equal(first.headers, again.headers)
    assert first.meta == again.meta
    load_split(data, "train", working=32)  # another size: another cache
    assert len(list(data.glob(".working-*-train-*.npz"))) == 2


def test_training_at_a_working_size_marks_the_model_and_fine_tuning_keeps_the_size(
    data_dir, tmp_path
):
    from ml.__main__ import main
    from ml.model import network
    from ml.pipeline import ScoringPipeline

    args = ["train", "--data", str(data_dir), "--steps", "2", "--batch", "2", "--epochs", "1",
            "--base", "2", "--depth", "2", "--quiet"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "run"), "--working", "32"]) == 0
    best = tmp_path / "run" / "best.keras"
    assert network.working_size(network.load(best)) == 32
    assert json.loads((tmp_path / "run" / "config.json").read_text())["working"] == 32
    # Fine-tuning without naming a size (what the annotation loop does) keeps the model's.
    assert main([*args, "--out", str(tmp_path / "tuned"), "--init", str(best)]) == 0
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["working"] == 32
    tuned = tmp_path / "tuned" / "best.keras"
    assert network.working_size(network.load(tuned)) == 32
    masks, _, _ = ScoringPipeline.load(tuned).score_arrays(
        [_blocky(90, 61)], [AcquisitionHeader(rows=90, columns=61, phase_encode="COL")]
    )
    assert masks.shape == (1, K, 90, 61)
    assert main([*args, "--out", str(tmp_path / "bad"), "--working", "40"]) == 2


def gathering_linear_axis(x, size, axis):
    """The former ``ml.model.preprocess._linear_axis`` (two gathers per axis), kept as the
    reference of the faster upsampling: linear interpolation along ``axis`` to ``size``
    samples, pixel centres aligned."""
    n = x.shape[axis]
    src = np.clip((np.arange(size) + 0.5) * (n / size) - 0.5, 0, n - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    shape = [1] * x.ndim
    shape[axis] = size
    f = (src - i0).astype(np.float32).reshape(shape)
    a, b = np.take(x, i0, axis=axis), np.take(x, i1, axis=axis)
    return (a + (b - a) * f).astype(np.float32)


def test_doubling_an_axis_gives_the_bytes_of_the_gathering_interpolation():
    """The exact-2x path of the upsampling (slices, one shared neighbour difference) against
    the gathering implementation it replaced (kept here as the reference): bit for bit, along
    any axis, for one or many samples, and through resample and upsample_probabilities."""

    reference = gathering_linear_axis
    rng = np.random.default_rng(7)
    for shape in [(2, 96, 128, 10), (3, 1, 5, 2), (1, 7, 1, 3), (4, 33, 17, 1)]:
        x = rng.random(shape, dtype=np.float32) * 3 - 1
        target = (2 * shape[1], 2 * shape[2])
        expected = reference(reference(x, target[0], 1), target[1], 2)
        got = upsample_probabilities(x, target)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
        # Planes (axes 0 and 1) and mixed ratios (one axis doubled, one not) agree too.
        plane = x[0, :, :, 0]
        np.testing.assert_array_equal(
            upsample_probabilities(plane, target, axes=(0, 1)),
            reference(reference(plane, target[0], 0), target[1], 1),
        )
        mixed = (2 * shape[1], shape[2] + 3)
        np.testing.assert_array_equal(
            upsample_probabilities(x, mixed), reference(reference(x, mixed[0], 1), mixed[1], 2)
        )
        np.testing.assert_array_equal(
            resample(x[..., 0], target), reference(reference(x[..., 0], target[0], 1), target[1], 2)
        )
