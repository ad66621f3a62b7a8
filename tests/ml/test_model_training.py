"""Train, prune, evaluate and export end to end on a 16-slice data set with a tiny network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml.__main__ import main


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    assert main(["dataset", "--out", str(out), "--slices", "16", "--seed", "3", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    args = ["train", "--data", str(data_dir), "--out", str(out), "--steps", "2", "--batch", "2",
            "--crop", "64", "--base", "4", "--depth", "2", "--quiet"]  # fmt: skip
    assert main([*args, "--epochs", "1"]) == 0
    assert main([*args, "--epochs", "2"]) == 0  # resumes from last.keras
    return out


def test_training_writes_checkpoints_curve_and_resumes(run_dir):
    for name in ("config.json", "last.keras", "best.keras", "rewind.weights.h5", "curve.png"):
        assert (run_dir / name).is_file(), name
    rows = (run_dir / "history.csv").read_text().splitlines()
    assert len(rows) == 3  # header + two epochs: the second run went on from the first
    assert rows[1].startswith("1.0,") and rows[2].startswith("2.0,")


def test_the_same_seed_draws_the_same_training_crops(data_dir):
    from ml.model.data import crop_batch, load_split

    split = load_split(data_dir, "train")
    idx = np.array([0, 1, 2])
    a = crop_batch(split, idx, 64, np.random.default_rng([0, 1]), augment=True)
    b = crop_batch(split, idx, 64, np.random.default_rng([0, 1]), augment=True)
    np.testing.assert_array_equal(a[0]["image"], b[0]["image"])
    np.testing.assert_array_equal(a[1]["masks"], b[1]["masks"])
    assert a[1]["presence"].shape == (3, 10) and a[1]["suitability"].shape == (3, 1)


def test_a_thin_copy_that_keeps_every_channel_computes_the_same_function(run_dir):
    from ml.model import network, prune

    model = network.load(run_dir / "best.keras")
    kept = {k: np.arange(v) for k, v in network.model_widths(model).items()}
    copy = prune.thin_copy(model, kept)
    x = {"image": np.random.default_rng(0).uniform(0, 1, (1, 32, 48, 1)).astype(np.float32),
         "header": np.ones((1, 8), np.float32)}  # fmt: skip
    for key, value in model.predict_on_batch(x).items():
        np.testing.assert_allclose(copy.predict_on_batch(x)[key], value, atol=1e-5)
    widths = network.model_widths(model)
    assert prune.parameter_count(widths, 2) == model.count_params()


def test_removing_a_channel_drops_exactly_its_weights(run_dir):
    from ml.model import network, prune

    model = network.load(run_dir / "best.keras")
    kept = {k: np.arange(v) for k, v in network.model_widths(model).items()}
    kept["enc1b"] = np.array([0, 2, 3, 5, 6, 7])  # feeds enc1b's consumers and the dec1a skip
    thin = prune.thin_copy(model, kept)
    np.testing.assert_array_equal(
        thin.get_layer("enc1b").get_weights()[0],
        model.get_layer("enc1b").get_weights()[0][..., kept["enc1b"]],
    )
    up1 = network.model_widths(model)["up1"]
    np.testing.assert_array_equal(
        thin.get_layer("dec1a").get_weights()[0][:, :, up1:],
        model.get_layer("dec1a").get_weights()[0][:, :, up1 + kept["enc1b"]],
    )
    assert thin.count_params() == prune.parameter_count(network.model_widths(thin), 2)


def test_energy_counts_the_full_resolution_layers_as_the_dearest_per_channel():
    from ml.model import network, prune

    energy = prune.channel_energy(network.default_widths(8, 4), 4)
    assert energy["enc0b"] > energy["botta"]
    assert all(v > 0 for v in energy.values())


def test_pruning_keeps_at_most_a_quarter_of_the_parameters_and_the_result_runs(run_dir):
    from ml.model import network

    assert main(["prune", str(run_dir), "--to", "0.25", "--epochs", "1", "--final-epochs", "2",
                 "--steps", "2", "--min-fraction", "0.25", "--quiet"]) == 0  # fmt: skip
    report = json.loads((run_dir / "pruned" / "prune.json").read_text())
    # The last round (the network that is kept) retrains longer than the first.
    assert report["retrain_epochs_per_round"] == [1, 2]
    history = (run_dir / "pruned" / "round2" / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + two epochs
    full = network.load(run_dir / "best.keras")
    pruned = network.load(run_dir / "pruned" / "best.keras")
    assert pruned.count_params() <= 0.25 * full.count_params()
    assert report["pruned_params"] == pruned.count_params()
    widths_full, widths_pruned = network.model_widths(full), network.model_widths(pruned)
    assert all(widths_pruned[k] <= widths_full[k] for k in widths_full)
    assert sum(widths_pruned.values()) < sum(widths_full.values())
    assert all(widths_pruned[k] >= max(2, widths_full[k] // 4) for k in widths_full)
    out = pruned.predict_on_batch(
        {"image": np.zeros((1, 48, 64, 1), np.float32), "header": np.zeros((1, 8), np.float32)}
    )
    assert out["masks"].shape == (1, 48, 64, 10)


def test_evaluate_tunes_thresholds_on_val_and_writes_the_report_and_the_plots(
    run_dir, data_dir, tmp_path
):
    from ml.model.evaluate import MODE_MIN_GAIN

    model = tmp_path / "model.keras"
    model.write_bytes((run_dir / "best.keras").read_bytes())
    assert main(["evaluate", str(model), "--data", str(data_dir), "--tune",
                 "--out", str(tmp_path / "eval")]) == 0  # fmt: skip
    sidecar = json.loads((tmp_path / "model.thresholds.json").read_text())
    assert set(sidecar["thresholds"]) == set(sidecar["iou_at_threshold"])
    # Each type's tuned mode is at least as good on val as its best per-pixel threshold.
    for name, pixel in sidecar["iou_pixel_mode"].items():
        assert sidecar["iou_at_threshold"][name] >= pixel
        if sidecar["modes"][name] != "pixel":  # another mode only for a real gain
            assert sidecar["iou_at_threshold"][name] >= pixel + MODE_MIN_GAIN
    # The presence stack is fitted per type where the split has enough slices with and
    # without it: two validation slices have none to fit, so nothing is stacked.
    assert set(sidecar["presence_stack_roc_auc"]) == set(sidecar["thresholds"])
    assert all(v["kept"] == 0.0 for v in sidecar["presence_stack_roc_auc"].values())
    assert "presence_stack" not in sidecar
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["thresholds"] == sidecar["thresholds"]
    assert report["presence_stack"] == []
    assert report["modes"] == sidecar["modes"]  # the saved model serves the tuned modes
    assert set(report["iou"]) == {
        "motion", "ghosting", "aliasing", "chemical_shift", "susceptibility",
        "zipper", "spike", "gibbs", "bias_field", "noise",
    }  # fmt: skip
    assert report["slices"] == 2
    assert {"suitability_roc_auc", "frequency_weighted_iou", "calibration", "by"} <= set(report)
    assert set(report["by"]) == {"source", "sequence", "field", "matrix"}
    assert (tmp_path / "eval" / "roc.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "iou.png").stat().st_size > 1000


def test_evaluate_serves_a_stacked_presence_as_the_scoring_pipeline_does(
    run_dir, data_dir, tmp_path
):
    from gpu_ops.scoring import PresenceStack, kspace_features
    from ml import ARTIFACT_TYPES
    from ml.model import network
    from ml.model.data import load_split
    from ml.model.evaluate import evaluate, predict_split
    from ml.model.preprocess import pad_to_stride
    from ml.pipeline import KerasProbabilities, ScoringPipeline

    model = tmp_path / "model.keras"
    network.with_mask_modes(network.load(run_dir / "best.keras"), ["whole"] * 10).save(model)
    gibbs = ARTIFACT_TYPES.index("gibbs")
    stack = PresenceStack([gibbs], [[0.0, 1.0]], [[1.0, 0.5]], [[0.5, 2.0]], [0.0])
    sidecar = {"thresholds": dict.fromkeys(ARTIFACT_TYPES, 0.5),
               "presence_stack": stack.to_json(ARTIFACT_TYPES)}  # fmt: skip
    (tmp_path / "model.thresholds.json").write_text(json.dumps(sidecar))
    result = evaluate(model, data_dir, tmp_path / "eval", "val")
    assert result["presence_stack"] == ["gibbs"] and result["modes"]["gibbs"] == "whole"
    split = load_split(data_dir, "val")
    plain = predict_split(network.load(model), split, threshold=0.5)
    stacked = predict_split(
        network.with_mask_modes(network.load(model), None),
        split,
        threshold=0.5,
        stack=stack,
        modes=["whole"] * 10,
    )
    np.testing.assert_allclose(
        stacked["presence"], stack.apply(plain["presence"], plain["kspace"]), atol=1e-6
    )
    pipeline = ScoringPipeline.load(model)
    assert isinstance(pipeline.model, KerasProbabilities)
    for i, image in enumerate(split.images):
        got = pipeline.infer(
            pad_to_stride(image[None]), split.headers[i : i + 1], kspace_features(image[None])
        )
        np.testing.assert_allclose(got["presence"][0], stacked["presence"][i], atol=1e-5)
        # "whole" on the stacked presence: the served Gibbs plane is that presence everywhere.
        np.testing.assert_allclose(got["masks"][0, ..., gibbs], stacked["presence"][i, gibbs],
                                   atol=1e-5)  # fmt: skip
    # The report's Gibbs IoU is counted on the served (stacked) masks.
    union = stacked["union"][:, gibbs].sum()
    expected_iou = stacked["intersection"][:, gibbs].sum() / union if union else None
    assert result["iou"]["gibbs"] == pytest.approx(expected_iou)


def test_the_onnx_export_gives_the_keras_outputs(run_dir, tmp_path):
    from ml.model.export import TOLERANCE
    from ml.pipeline import ScoringPipeline
    from ml.simulate.header import AcquisitionHeader

    out = tmp_path / "model.onnx"
    assert main(["export", str(run_dir / "best.keras"), "--format", "onnx", "--out", str(out)]) == 0
    keras_pipe = ScoringPipeline.load(run_dir / "best.keras")
    onnx_pipe = ScoringPipeline.load(out)
    image = np.random.default_rng(1).uniform(0, 1, (40, 56)).astype(np.float32)
    header = AcquisitionHeader(rows=40, columns=56, phase_encode="COL")
    a = keras_pipe.infer(image[None].repeat(16, 0)[:, :, :48].copy(), np.zeros((16, 8), np.float32))
    b = onnx_pipe.infer(image[None].repeat(16, 0)[:, :, :48].copy(), np.zeros((16, 8), np.float32))
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=TOLERANCE)
    assert onnx_pipe.score_arrays([image], [header])[0].shape == (1, 10, 40, 56)


def test_training_with_init_fine_tunes_the_given_model_keeping_its_architecture(
    run_dir, data_dir, tmp_path
):
    import ml
    from ml.model import network

    init = Path(ml.__file__).parent / "weights" / "artiscan-pruned.keras"
    shipped = network.load(init)
    args = ["train", "--data", str(data_dir), "--steps", "2", "--batch", "2", "--crop", "64",
            "--epochs", "1", "--init", str(init), "--quiet"]  # fmt: skip
    # --base/--depth are ignored: the architecture is the initial model's.
    assert main([*args, "--out", str(tmp_path / "still"), "--lr", "0", "--base", "4"]) == 0
    assert main([*args, "--out", str(tmp_path / "moved")]) == 0
    still = network.load(tmp_path / "still" / "best.keras")
    moved = network.load(tmp_path / "moved" / "best.keras")
    assert network.model_widths(still) == network.model_widths(shipped)
    assert network.model_widths(moved) == network.model_widths(shipped)
    kernel = shipped.get_layer("botta").get_weights()[0]
    # A zero learning rate leaves the starting weights as they were: training began from them.
    np.testing.assert_array_equal(still.get_layer("botta").get_weights()[0], kernel)
    changed = moved.get_layer("botta").get_weights()[0]
    assert not np.array_equal(changed, kernel)
    assert np.abs(changed - kernel).max() < 0.05  # two small Adam steps away, not a fresh draw


def test_reset_masks_starts_the_named_channels_afresh_and_keeps_the_rest(data_dir, tmp_path):
    import ml
    from ml import ARTIFACT_TYPES
    from ml.model import network

    init = Path(ml.__file__).parent / "weights" / "artiscan-pruned.keras"
    kernel, bias = network.load(init).get_layer("mask_logits").get_weights()
    args = ["train", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--steps", "1",
            "--batch", "2", "--crop", "64", "--epochs", "1", "--lr", "0", "--init", str(init),
            "--reset-masks", "zipper", "gibbs", "--quiet"]  # fmt: skip
    assert main(args) == 0
    new_kernel, new_bias = (
        network.load(tmp_path / "run" / "best.keras").get_layer("mask_logits").get_weights()
    )
    reset = [ARTIFACT_TYPES.index("zipper"), ARTIFACT_TYPES.index("gibbs")]
    kept = [k for k in range(len(ARTIFACT_TYPES)) if k not in reset]
    np.testing.assert_allclose(new_bias[reset], network.MASK_PRIOR_LOGIT)
    assert not np.allclose(new_kernel[..., reset], kernel[..., reset])
    np.testing.assert_array_equal(new_kernel[..., kept], kernel[..., kept])
    np.testing.assert_array_equal(new_bias[kept], bias[kept])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["reset_masks"] == ["zipper", "gibbs"]


def test_reset_masks_without_init_is_refused(data_dir, tmp_path, capsys):
    code = main(["train", "--data", str(data_dir), "--out", str(tmp_path / "run"),
                 "--reset-masks", "zipper", "--quiet"])  # fmt: skip
    assert code == 2
    assert "--reset-masks needs --init" in capsys.readouterr().err


def test_training_with_a_missing_init_model_fails_clearly(data_dir, tmp_path, capsys):
    code = main(["train", "--data", str(data_dir), "--out", str(tmp_path / "run"),
                 "--init", str(tmp_path / "absent.keras"), "--quiet"])  # fmt: skip
    assert code == 2
    assert "no such model file" in capsys.readouterr().err


def test_foreground_crops_land_on_artifact_pixels_more_often_than_uniform_ones(data_dir):
    from ml.model.data import crop_batch, load_split

    split = load_split(data_dir, "train")
    with_artifact = np.array([i for i, m in enumerate(split.masks) if m.any()])
    idx = np.repeat(with_artifact, 10)

    def positive_share(foreground):
        _, y = crop_batch(split, idx, 32, np.random.default_rng(0), False, foreground)
        return float(y["presence"].max(axis=1).mean())

    assert positive_share(1.0) == 1.0  # every crop holds a pixel of one of its slice's types
    assert positive_share(0.0) < 1.0


def test_balanced_sampling_draws_slices_with_rare_types_more_often():
    from ml.model.data import Split, slice_weights

    masks = [np.zeros((10, 8, 8), np.uint8) for _ in range(5)]
    masks[0][3, 2:4, 2:4] = 1  # chemical shift in one slice of five
    for m in masks[1:4]:
        m[6] = 1  # spike in three
    masks[3][3, 0, 0] = 1  # ... one of which also has chemical shift; slice 4 is clean
    split = Split(images=[np.zeros((8, 8), np.float32)] * 5, masks=masks)
    weights = slice_weights(split)
    # frequencies: chemical shift 2/5, spike 3/5, clean 1/5; weight = max 1/sqrt(frequency)
    expected = np.array([1 / np.sqrt(0.4), 1 / np.sqrt(0.6), 1 / np.sqrt(0.6),
                         1 / np.sqrt(0.4), 1 / np.sqrt(0.2)])  # fmt: skip
    np.testing.assert_allclose(weights, expected / expected.sum())


def test_the_litert_export_gives_the_keras_outputs_through_the_pipeline(run_dir, tmp_path):
    from ml.model.litert import TOLERANCE, LiteRTModel
    from ml.pipeline import ScoringPipeline
    from ml.simulate.header import AcquisitionHeader

    out = tmp_path / "model.tflite"
    assert main(["export", str(run_dir / "best.keras"), "--format", "litert",
                 "--out", str(out)]) == 0  # fmt: skip
    keras_pipe = ScoringPipeline.load(run_dir / "best.keras")
    lite_pipe = ScoringPipeline.load(out)  # a .tflite path, as `ml score --model` takes it
    assert isinstance(lite_pipe.model, LiteRTModel)
    rng = np.random.default_rng(2)
    # Two shapes in a row: the interpreter is resized per call (dynamic batch, rows, columns).
    for batch, rows, cols in ((3, 48, 64), (1, 80, 32)):
        images = rng.uniform(0, 1.2, (batch, rows, cols)).astype(np.float32)
        headers = rng.normal(0, 1, (batch, 8)).astype(np.float32)
        a, b = keras_pipe.infer(images, headers), lite_pipe.infer(images, headers)
        for key in a:
            assert b[key].shape == a[key].shape
            np.testing.assert_allclose(b[key], a[key], atol=TOLERANCE)
    image = rng.uniform(0, 1, (40, 56)).astype(np.float32)
    header = AcquisitionHeader(rows=40, columns=56, phase_encode="COL")
    assert lite_pipe.score_arrays([image], [header])[0].shape == (1, 10, 40, 56)


def test_the_int8_litert_export_stays_within_its_stated_tolerances_on_unseen_slices(
    data_dir, tmp_path
):
    import ml
    from ml.model import litert, network
    from ml.model.data import load_split
    from ml.model.preprocess import pad_to_stride

    shipped = Path(ml.__file__).parent / "weights" / "artiscan-pruned.keras"
    float_out, int8_out = tmp_path / "p.tflite", tmp_path / "p.int8.tflite"
    assert main(["export", str(shipped), "--format", "litert", "--out", str(float_out)]) == 0
    assert main(["export", str(shipped), "--format", "litert", "--int8", "--data", str(data_dir),
                 "--out", str(int8_out)]) == 0  # fmt: skip
    assert int8_out.stat().st_size < 0.5 * float_out.stat().st_size  # int8 weights
    # Calibrated on the train split; checked here on the val and test splits' slices.
    unseen = [load_split(data_dir, "val"), load_split(data_dir, "test")]
    batches = [
        {"image": pad_to_stride(s.images[i][None])[..., None], "header": s.headers[i : i + 1]}
        for s in unseen
        for i in range(len(s))
    ]
    # The int8 file is the network only; its sidecar names the modes the pipeline applies in
    # float32 (the shipped pruned model serves level and head maps, read from the air's level).
    from ml.pipeline import ScoringPipeline

    modes = tuple(network.mask_modes(network.load(shipped)))
    assert {"level", "head"} <= set(modes)
    int8_pipe = ScoringPipeline.load(int8_out)
    assert int8_pipe.model.modes == modes and int8_pipe.modes == modes
    result = litert.compare(network.load(shipped), int8_pipe.model, batches)
    assert result["mask_mean_abs"] <= litert.INT8_MEAN_TOLERANCE
    assert result["scores_max_abs"] <= litert.INT8_MAX_TOLERANCE
    assert result["mask_agreement"] >= litert.INT8_AGREEMENT
    # Through the pipelines (the int8 one applies the modes itself): the served masks at the
    # tuned thresholds agree with the Keras file's as closely.
    keras_pipe = ScoringPipeline.load(shipped)
    agree = []
    for batch in batches:
        image, header = batch["image"][..., 0], batch["header"]
        a, b = keras_pipe.infer(image, header), int8_pipe.infer(image, header)
        agree.append(np.mean((a["masks"] >= keras_pipe.thresholds)
                             == (b["masks"] >= int8_pipe.thresholds)))  # fmt: skip
    assert np.mean(agree) >= litert.INT8_AGREEMENT
    # The float export is the tighter one: int8 really is quantised, not a float copy.
    # (Served with the modes: the shipped sidecar's presence stack has the float file
    # exported without them too, see below.)
    float_model = litert.LiteRTModel(float_out, modes=ScoringPipeline.load(float_out).modes)
    exact = litert.compare(network.load(shipped), float_model, batches)
    assert exact["mask_mean_abs"] < result["mask_mean_abs"]
    # Served by the pipeline from its path, with the thresholds tuned for the model (the
    # export wrote them beside each file under its own name). The shipped pruned model's
    # sidecar stacks presence with the k-space, so the float file is exported without its
    # modes too (they must use the stacked presence) and its sidecar names them.
    assert ScoringPipeline.load(shipped).stack is not None
    assert ScoringPipeline.load(float_out).model.modes == modes
    assert ScoringPipeline.load(float_out).stack is not None
    assert (tmp_path / "p.thresholds.json").is_file()
    assert (tmp_path / "p.int8.thresholds.json").is_file()
    expected = ScoringPipeline.load(shipped).thresholds
    for path in (float_out, int8_out):
        served = ScoringPipeline.load(path)
        assert isinstance(served.model, litert.LiteRTModel)
        np.testing.assert_array_equal(served.thresholds, expected)
    assert not np.all(expected == ScoringPipeline.threshold)  # really the tuned ones


@pytest.mark.parametrize("fmt", ["onnx", "litert", "litert-int8"])
def test_an_export_that_fails_its_check_leaves_no_file_to_serve(
    run_dir, data_dir, tmp_path, monkeypatch, capsys, fmt
):
    """The check's tolerance is made unreachable (a difference of at most -1): the export says
    so, exits 1, and leaves neither the file nor its thresholds sidecar where `ml score
    --model` would pick them up; the model's own sidecar is untouched."""
    from ml.model import export, litert
    from ml.model.evaluate import thresholds_path

    monkeypatch.setattr(export, "TOLERANCE", -1.0)
    monkeypatch.setattr(litert, "TOLERANCE", -1.0)
    monkeypatch.setattr(litert, "INT8_AGREEMENT", 1.01)
    model = run_dir / "best.keras"
    own = thresholds_path(model).read_bytes() if thresholds_path(model).is_file() else None
    out = tmp_path / {"onnx": "m.onnx", "litert": "m.tflite", "litert-int8": "m.int8.tflite"}[fmt]
    args = ["export", str(model), "--format", fmt.split("-")[0], "--out", str(out)]
    if fmt == "litert-int8":
        args += ["--int8", "--data", str(data_dir), "--calibration-slices", "4"]
    assert main(args) == 1
    assert "differ" in capsys.readouterr().err
    assert not out.exists() and not thresholds_path(out).exists()
    assert list(tmp_path.iterdir()) == []
    if own is not None:
        assert thresholds_path(model).read_bytes() == own


def test_int8_is_refused_for_onnx(run_dir, capsys):
    code = main(["export", str(run_dir / "best.keras"), "--format", "onnx", "--int8"])
    assert code == 2
    assert "--int8 needs --format litert" in capsys.readouterr().err


def test_best_keras_is_the_epoch_of_the_highest_tuned_validation_iou(run_dir):
    import csv

    from ml.model import network

    with (run_dir / "history.csv").open() as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    assert all(0.0 <= r["val_iou"] <= 1.0 for r in rows)
    merits = [(r["val_iou"], -r["val_loss"]) for r in rows]
    kept = merits.index(max(merits))  # the first of equals: a later one must beat it
    best = network.load(run_dir / "best.keras").get_layer("mask_logits").get_weights()[0]
    last = network.load(run_dir / "last.keras").get_layer("mask_logits").get_weights()[0]
    assert np.array_equal(best, last) == (kept == len(rows) - 1)


def test_the_kept_epoch_is_chosen_by_iou_before_loss():
    from ml.model.train import _merit

    rows = [
        {"val_iou": 0.30, "val_loss": 1.00},
        {"val_iou": 0.35, "val_loss": 1.20},  # higher IoU, higher loss: kept
        {"val_iou": 0.35, "val_loss": 1.30},  # equal IoU, higher loss
        {"val_loss": 0.50},  # written before the IoU was recorded: counts as 0
    ]
    assert max(range(len(rows)), key=lambda i: _merit(rows[i])) == 1
    assert _merit(rows[3]) < _merit(rows[0])
