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


# --- The ONNX scoring graph and the type-by-type post-processing (scoring speed, issue 5) -------
# The previous implementation, kept as the reference: the exported graph served whole (mask
# modes and the transpose to channels-last inside it), the probabilities brought back with
# per-axis gathers (the former ml.model.preprocess._linear_axis, kept in
# tests/ml/test_working_resolution.py) and thresholded at once.


def _reference_score(model, thresholds, working, images, header):
    """The former ``ScoringPipeline.score_arrays`` for slices of one phase-encode direction:
    masks uint8 (S, K, rows, cols) and the served probabilities on the slice grid."""
    from gpu_ops.scoring import canonical_batch, normalise_batch, threshold_masks
    from ml.model.preprocess import header_vector_from, to_model_grid
    from tests.ml.test_working_resolution import gathering_linear_axis

    pe = header.phase_encode
    batch = normalise_batch(canonical_batch(np.stack(images).astype(np.float32), pe))
    crows, ccols = batch.shape[1:]
    net = to_model_grid(batch, working)
    vectors = np.stack([header_vector_from(header)] * len(images))
    out = model.predict_on_batch({"image": net[..., None], "header": vectors})
    probs = np.asarray(out["masks"], np.float32)
    if working is None:
        probs = probs[:, :crows, :ccols]
    else:
        for axis, size in ((1, crows), (2, ccols)):
            if probs.shape[axis] != size:
                probs = gathering_linear_axis(probs, size, axis)
    masks = threshold_masks(probs, crows, ccols, thresholds)
    served = np.moveaxis(probs, -1, 1)
    return (
        canonical_batch(masks, pe),
        canonical_batch(served, pe),
        np.asarray(out["presence"]),
        np.asarray(out["suitability"])[:, 0],
    )


def _artifact_slices(rows=192, cols=256):
    """Phantom slices with simulated artifacts of several kinds, so that the shipped models'
    probabilities spread over their thresholds."""
    from ml.simulate import simulate

    image, _ = head_phantom(max(rows, cols))
    image = np.ascontiguousarray(image[:rows, :cols] * 900)
    header = AcquisitionHeader(rows=rows, columns=cols, phase_encode="ROW")
    kinds = ["motion", "ghosting", "spike", "noise", "aliasing", "bias_field"]
    return [simulate(image, kind, 0.8, header, seed=i) for i, kind in enumerate(kinds)]


TIE = 1e-5
"""Probability tolerance of the speed work: served probabilities within this of the previous
implementation's, masks identical except where the previous probability lay within this of
the type's threshold (a tie that float rounding may tip either way)."""


@pytest.mark.parametrize("name", ["pruned-onnx", "full-onnx"])
@pytest.mark.parametrize("phase_encode", ["ROW", "COL"])
def test_the_shipped_onnx_models_score_as_before_the_speed_work(name, phase_encode):
    from ml.pipeline import SHIPPED, OnnxModel, ScoringPipeline

    pipeline = ScoringPipeline.load(name)
    assert pipeline.model.modes is not None  # served up to the per-pixel probabilities
    # The graph serves the network's own presence; a presence stack in the sidecar has its
    # own test (test_a_presence_stack_re_estimates_presence_from_each_slice_s_own_k_space).
    pipeline.stack = None
    whole_graph = OnnxModel(SHIPPED[name], cut=False)  # the file as exported
    assert whole_graph.modes is None
    slices = _artifact_slices()
    if phase_encode == "COL":
        slices = [s.T.copy() for s in slices]
    rows, cols = slices[0].shape
    header = AcquisitionHeader(rows=rows, columns=cols, phase_encode=phase_encode)
    masks, presence, suitability = pipeline.score_arrays(slices, [header] * len(slices))
    ref_masks, ref_probs, ref_presence, ref_suitability = _reference_score(
        whole_graph, pipeline.thresholds, pipeline.working_size, slices, header
    )
    np.testing.assert_allclose(presence, ref_presence, atol=TIE)
    np.testing.assert_allclose(suitability, ref_suitability, atol=TIE)
    differ = masks != ref_masks
    margin = np.abs(ref_probs - pipeline.thresholds[None, :, None, None])
    assert not (differ & (margin >= TIE)).any(), int(differ.sum())
    assert 0.001 < ref_masks.mean() < 0.999  # the comparison is not a trivial one
    # infer() still returns the served masks (channels-last, modes applied).
    from gpu_ops.scoring import canonical_batch, normalise_batch
    from ml.model.preprocess import header_vector_from, to_model_grid

    batch = normalise_batch(canonical_batch(np.stack(slices), phase_encode))
    net = to_model_grid(batch, pipeline.working_size)
    vectors = np.stack([header_vector_from(header)] * len(slices))
    got = pipeline.infer(net, vectors)["masks"]
    expected = whole_graph.predict_on_batch({"image": net[..., None], "header": vectors})["masks"]
    np.testing.assert_allclose(got, expected, atol=TIE)


def test_the_scoring_graph_is_a_valid_onnx_model_with_the_other_outputs_unchanged():
    import onnx

    from ml.pipeline import SHIPPED, onnx_scoring_graph

    for name in ("pruned-onnx", "full-onnx"):
        original = onnx.load(str(SHIPPED[name]))
        cut = onnx_scoring_graph(SHIPPED[name].read_bytes())
        assert cut is not None and cut.applies_modes
        model = onnx.load_from_string(cut.model)
        onnx.checker.check_model(model)
        outputs = [o.name for o in model.graph.output]
        assert outputs == [cut.output, "presence", "suitability"]
        assert [o.name for o in original.graph.output] == ["masks", "presence", "suitability"]
        # Nothing of the mask-mode tail is left but what the exporter merged with a node the
        # other outputs need (the level mode's reshape of the input image, named for MaskMode).
        assert all(
            n.op_type in ("Reshape", "Unsqueeze", "Shape", "Cast")
            for n in model.graph.node
            if "mask_mode" in n.name
        )
        assert [i.name for i in model.graph.input] == [i.name for i in original.graph.input]
        assert model.metadata_props == original.metadata_props  # the working size travels
        kept = {n.name for n in model.graph.node}
        assert kept <= {n.name for n in original.graph.node}


def test_the_modes_come_from_the_onnx_file_itself_not_from_its_sidecar(tmp_path):
    """The cut graph is served with the modes the file names in its metadata (the shipped
    files: the modes their ``.keras`` files were tuned with): a sidecar describing a newer
    ``.keras`` file changes nothing, and a graph whose modes cannot be read is served whole,
    with the same masks."""
    import json
    import shutil

    import onnx

    from ml.pipeline import MASK_MODES_KEY, SHIPPED, ScoringPipeline, onnx_scoring_graph

    for name in ("pruned", "full"):
        proto = onnx.load(str(SHIPPED[f"{name}-onnx"]))
        named = {p.key: p.value for p in proto.metadata_props}[MASK_MODES_KEY]
        tuned = json.loads(SHIPPED[name].with_suffix(".thresholds.json").read_text())["modes"]
        assert tuple(named.split(",")) == tuple(tuned[t] for t in ARTIFACT_TYPES)
        assert onnx_scoring_graph(SHIPPED[f"{name}-onnx"].read_bytes()).modes == tuple(
            named.split(",")
        )
    bare = tmp_path / "m.onnx"
    shutil.copy(SHIPPED["pruned-onnx"], bare)
    own = ScoringPipeline.load(bare)
    assert own.modes == onnx_scoring_graph(bare.read_bytes()).modes
    assert {"line", "level", "head"} <= set(own.modes)  # the image modes, read back
    sidecar = {
        "thresholds": {n: 0.3 for n in ARTIFACT_TYPES},
        "modes": dict.fromkeys(ARTIFACT_TYPES, "gated"),
    }
    (tmp_path / "m.thresholds.json").write_text(json.dumps(sidecar))
    stale = ScoringPipeline.load(bare)
    assert stale.modes == own.modes
    # The metadata's key renamed (same length: the file stays valid) and the selector
    # constants not an older file's: unreadable modes, so the file is served whole.
    unnamed = bare.read_bytes().replace(MASK_MODES_KEY.encode(), b"artiscan_mask_modez")
    (tmp_path / "w.onnx").write_bytes(unnamed)
    (tmp_path / "w.thresholds.json").write_text(json.dumps(sidecar))
    whole = ScoringPipeline.load(tmp_path / "w.onnx")
    assert whole.model.modes is None and whole.modes == ("pixel",) * len(ARTIFACT_TYPES)
    slices = _artifact_slices(64, 96)
    header = AcquisitionHeader(rows=64, columns=96, phase_encode="ROW")
    a = whole.score_arrays(slices, [header] * len(slices))
    b = stale.score_arrays(slices, [header] * len(slices))
    assert (a[0] != b[0]).mean() < 1e-4
    np.testing.assert_allclose(a[1], b[1], atol=TIE)


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        (3, ("pixel", "gated", "whole", "pixel", "gated", "whole", "pixel", "gated", "whole",
             "pixel")),
        (4, ("pixel", "gated", "whole", "line", "gated", "whole", "line", "gated", "whole",
             "pixel")),
        (5, None),  # a fifth constant: not an older file's selectors (the level map's)
    ],
)  # fmt: skip
def test_a_file_without_the_metadata_has_its_modes_read_from_its_selector_constants(
    selectors, expected
):
    """Files exported before the metadata key (round 6 and earlier) name their modes only in
    their MaskMode layer's 0/1 selector constants ``Const``, ``Const_1``, ... (pixel, gated,
    whole, line): read back from a graph holding just those."""
    import onnx
    from onnx import helper, numpy_helper

    from ml.pipeline import _graph_mask_modes, _parse_onnx

    order = ("pixel", "gated", "whole", "line", "level")
    modes = expected or ("pixel",) * 9 + ("level",)
    inits = [
        numpy_helper.from_array(
            np.array([m == order[i] for m in modes], np.float32),
            name=f"mask_mode_1/Const{'' if i == 0 else f'_{i}'}:0",
        )
        for i in range(selectors)
    ]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"], name="id")],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        initializer=inits,
    )
    parsed = _parse_onnx(helper.make_model(graph).SerializeToString())
    assert parsed is not None
    assert _graph_mask_modes(parsed) == expected


def test_a_graph_not_shaped_as_expected_is_not_cut():
    from ml.pipeline import SHIPPED, onnx_scoring_graph

    data = SHIPPED["pruned-onnx"].read_bytes()
    assert onnx_scoring_graph(data.replace(b"masks_1/Sigmoid", b"other_1/Sigmoid")) is None
    assert onnx_scoring_graph(b"") is None
    assert onnx_scoring_graph(data[: len(data) // 2]) is None  # truncated: no exception


def test_the_npz_holds_what_numpy_savez_compressed_held(tmp_path):
    """OUT.npz is written at zlib level 1 instead of numpy's default: the same members, dtypes
    and values, and a path without ``.npz`` still gets the suffix."""
    from ml.pipeline import ScoreResult

    rng = np.random.default_rng(5)
    result = ScoreResult(
        sop_instance_uid=["1.2.3", "1.2.4"],
        classes=ARTIFACT_TYPES,
        masks=(rng.random((2, len(ARTIFACT_TYPES), 6, 7)) > 0.8).astype(np.uint8),
        presence=rng.random((2, len(ARTIFACT_TYPES)), dtype=np.float32),
        suitability=np.array([0.25, 0.75], np.float32),
        series_suitability=0.5,
    )
    result.to_npz(tmp_path / "new")
    np.savez_compressed(
        tmp_path / "old.npz",
        sop_instance_uid=np.array(result.sop_instance_uid, dtype=str),
        classes=np.array(result.classes, dtype=str),
        masks=result.masks,
        suitability=result.suitability,
        series_suitability=np.float32(result.series_suitability),
    )
    with np.load(tmp_path / "new.npz") as new, np.load(tmp_path / "old.npz") as old:
        assert sorted(new.files) == sorted(old.files)
        for key in old.files:
            assert new[key].dtype == old[key].dtype and new[key].shape == old[key].shape
            np.testing.assert_array_equal(new[key], old[key])


def test_onnx_and_litert_files_run_two_slices_a_call_and_give_the_same_masks(tmp_path):
    from ml.pipeline import OnnxModel, ScoringPipeline

    assert OnnxModel.batch_size == 2
    assert ScoringPipeline(ThresholdModel(), weights=tmp_path / "m.tflite").batch_size == 2
    eight = ScoringPipeline(ThresholdModel(), weights=tmp_path / "m.keras")
    assert eight.batch_size == 8
    two = ScoringPipeline(ThresholdModel(), weights=tmp_path / "m.tflite")
    images = [_asymmetric() * (1 + i) for i in range(5)]
    headers = [AcquisitionHeader(rows=40, columns=72)] * 5
    expected, got = eight.score_arrays(images, headers), two.score_arrays(images, headers)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_int8_file_s_sidecar_names_k_known_modes_or_is_refused():
    from ml.model.litert import PIPELINE_MODES_KEY, pipeline_modes

    assert pipeline_modes({}) is None  # a file that applies its own modes
    modes = ["head", "level"] + ["pixel"] * 8
    assert pipeline_modes({PIPELINE_MODES_KEY: modes}) == tuple(modes)
    for bad in (["pixel"] * 3, ["blurred"] * 10):
        with pytest.raises(ValueError, match=PIPELINE_MODES_KEY):
            pipeline_modes({PIPELINE_MODES_KEY: bad})


def test_an_int8_export_needs_a_sidecar_of_its_own_and_a_float_one_applies_its_own_modes(
    tmp_path,
):
    import json

    from ml.model.litert import PIPELINE_MODES_KEY, export_litert, name_pipeline_modes

    model = tmp_path / "m.keras"  # never read: refused before
    with pytest.raises(ValueError, match="sidecar of its own"):
        export_litert(model, tmp_path / "m.tflite", int8=True)
    # A float file's sidecar loses a name that an int8 export left there; an int8 file's gets it.
    sidecar = tmp_path / "f.thresholds.json"
    modes = ["head"] + ["pixel"] * 9
    sidecar.write_text(json.dumps({"thresholds": {"noise": 0.4}, PIPELINE_MODES_KEY: modes}))
    name_pipeline_modes(tmp_path / "f.tflite", None)
    assert json.loads(sidecar.read_text()) == {"thresholds": {"noise": 0.4}}
    name_pipeline_modes(tmp_path / "f.tflite", tuple(modes))
    assert json.loads(sidecar.read_text())[PIPELINE_MODES_KEY] == modes
    name_pipeline_modes(tmp_path / "g.tflite", None)  # no sidecar: none written
    assert not (tmp_path / "g.thresholds.json").exists()


# --- a presence stack with the slice's k-space (issue 5, round 10) ----------------------------


def _stacked_copy(tmp_path, stem, stack_json):
    """Copies of the shipped pruned files under ``tmp_path/stem.*`` whose sidecar holds
    ``stack_json`` as its ``presence_stack`` (none: no stack)."""
    import json

    from ml.pipeline import WEIGHTS_DIR

    for suffix in (".keras", ".onnx"):
        (tmp_path / f"{stem}{suffix}").write_bytes(
            (WEIGHTS_DIR / f"artiscan-pruned{suffix}").read_bytes()
        )
    content = json.loads((WEIGHTS_DIR / "artiscan-pruned.thresholds.json").read_text())
    content.pop("presence_stack", None)
    if stack_json is not None:
        content["presence_stack"] = stack_json
    (tmp_path / f"{stem}.thresholds.json").write_text(json.dumps(content))
    return tmp_path / f"{stem}.onnx", tmp_path / f"{stem}.keras"


def _slices_with_gibbs(phase_encode):
    from ml.data.slices import add_noise_floor
    from ml.simulate import simulate

    # 288 x 384: not the shipped models' working grid (192 x 256), so features computed on the
    # network's input instead of the slice's own grid would differ.
    slices = _artifact_slices(288, 384)
    header = AcquisitionHeader(rows=288, columns=384, phase_encode="ROW")
    floor = add_noise_floor(slices[0] / 900, 0.01, np.random.default_rng(0)) * 900
    slices += [floor, simulate(floor, "gibbs", 0.4, header, seed=3)]
    if phase_encode == "COL":
        slices = [s.T.copy() for s in slices]
    rows, cols = slices[0].shape
    return slices, AcquisitionHeader(rows=rows, columns=cols, phase_encode=phase_encode)


@pytest.mark.parametrize("phase_encode", ["ROW", "COL"])
def test_a_presence_stack_re_estimates_presence_from_each_slice_s_own_k_space(
    tmp_path, phase_encode
):
    from gpu_ops.scoring import (
        PresenceStack,
        canonical_batch,
        kspace_features,
        normalise_batch,
        serve_masks,
    )
    from ml import ARTIFACT_TYPES
    from ml.model.preprocess import header_vector_from, to_model_grid, upsample_probabilities
    from ml.pipeline import KerasProbabilities, ScoringPipeline

    gibbs, ghosting = ARTIFACT_TYPES.index("gibbs"), ARTIFACT_TYPES.index("ghosting")
    stack = PresenceStack(
        [gibbs, ghosting],
        mean=[[0.0, 1.5], [0.0, 0.0]],
        scale=[[1.0, 0.1], [1.0, 1.0]],
        weights=[[0.2, 3.0], [-1.0, 0.0]],  # ghosting: the network's, inverted
        bias=[0.0, 0.5],
    )
    plain_onnx, _ = _stacked_copy(tmp_path, "plain", None)
    onnx, keras = _stacked_copy(tmp_path, "stacked", stack.to_json(ARTIFACT_TYPES))
    plain, stacked = ScoringPipeline.load(plain_onnx), ScoringPipeline.load(onnx)
    assert plain.stack is None and stacked.stack is not None
    assert stacked.modes == plain.modes and stacked.model.modes is not None
    slices, header = _slices_with_gibbs(phase_encode)
    masks, presence, suitability = stacked.score_arrays(slices, [header] * len(slices))
    base_masks, base_presence, base_suitability = plain.score_arrays(slices, [header] * len(slices))
    np.testing.assert_array_equal(suitability, base_suitability)
    # The features of each slice on its own (canonical) grid, not the working grid.
    batch = normalise_batch(canonical_batch(np.stack(slices).astype(np.float32), phase_encode))
    features = kspace_features(batch)
    np.testing.assert_allclose(presence, stack.apply(base_presence, features), atol=1e-6)
    assert features[-1].sum() > features[:-1].sum(axis=1).max() + 0.5  # zero-filled
    assert presence[-1, gibbs] > 0.9 > presence[:-1, gibbs].max()
    on_working_grid = kspace_features(to_model_grid(batch, stacked.working_size))
    assert np.abs(on_working_grid - features).max() > 0.1  # the own grid matters
    # Stored DICOM pixels are integers: rounding fills the empty outer k-space a little, yet
    # the zero-filled slice still stands out (its noise floor is ~9 units here).
    _, rounded, _ = stacked.score_arrays([np.rint(s) for s in slices], [header] * len(slices))
    assert rounded[-1, gibbs] > 0.9 > rounded[:-1, gibbs].max()
    others = [k for k in range(len(ARTIFACT_TYPES)) if k not in (gibbs, ghosting)]
    np.testing.assert_array_equal(masks[:, others], base_masks[:, others])
    # The stacked types' masks: the modes served on the stacked presence.
    rows, cols = batch.shape[1:]
    net = to_model_grid(batch, stacked.working_size)
    vectors = np.stack([header_vector_from(header)] * len(slices))
    raw = stacked.model.predict_probabilities({"image": net[..., None], "header": vectors})
    expected = serve_masks(
        raw["probabilities"],
        stack.apply(raw["presence"], features),
        stacked.modes,
        stacked.thresholds,
        rows,
        cols,
        resize=lambda plane: upsample_probabilities(plane, (rows, cols), axes=(-2, -1)),
        images=net,
    )
    np.testing.assert_array_equal(masks, canonical_batch(expected, phase_encode))
    stacked_types = [gibbs, ghosting]
    assert (masks[:, stacked_types] != base_masks[:, stacked_types]).any()  # not a no-op
    # The .keras file with the same sidecar serves the same through its probabilities.
    from_keras = ScoringPipeline.load(keras)
    assert isinstance(from_keras.model, KerasProbabilities)
    assert from_keras.modes == stacked.modes
    k_masks, k_presence, _ = from_keras.score_arrays(slices, [header] * len(slices))
    np.testing.assert_allclose(k_presence, presence, atol=1e-4)
    assert (k_masks != masks).mean() < 1e-3
    # infer() applies the stack too, from the features it is given.
    inferred = stacked.infer(net, vectors, kspace=features)
    np.testing.assert_allclose(inferred["presence"], stack.apply(raw["presence"], features))


def test_a_model_that_applies_its_own_modes_refuses_a_stacked_sidecar(tmp_path):
    import json

    from ml.model import network
    from ml.pipeline import ScoringError, ScoringPipeline

    onnx, keras = _stacked_copy(tmp_path, "stacked", {"inputs": ["x"], "types": {}})
    with pytest.raises(ScoringError, match="presence_stack reads"):
        ScoringPipeline.load(onnx)
    stack = {
        "inputs": ["presence_logit", "kspace_step_mean"],
        "types": {"gibbs": {"mean": [0, 0], "scale": [1, 1], "weights": [1, 1], "bias": 0}},
    }  # fmt: skip
    onnx, keras = _stacked_copy(tmp_path, "stacked", stack)
    # A LiteRT export of it names the modes in its own sidecar: never the model's.
    from ml.cli.export import _litert_suffix
    from ml.model.litert import export_litert

    with pytest.raises(ValueError, match="presence stack names its mask modes"):
        export_litert(keras, keras.with_suffix(".tflite"))  # refused before any conversion
    assert _litert_suffix(keras, int8=False) == ".float.tflite"
    assert _litert_suffix(keras, int8=True) == ".int8.tflite"
    assert _litert_suffix(tmp_path / "plain.keras", int8=False) == ".tflite"
    with pytest.raises(ScoringError, match="applies its mask modes itself"):
        ScoringPipeline(network.load(keras), keras)  # the graph serves its own modes
    sidecar = json.loads(keras.with_name("stacked.thresholds.json").read_text())
    assert ScoringPipeline.load(keras).stack is not None and sidecar["presence_stack"] == stack
