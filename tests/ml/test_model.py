"""The Keras 3 network: shapes, save/load round trip, FiLM, the loss."""

from __future__ import annotations

import numpy as np
import pytest

from ml import ARTIFACT_TYPES


@pytest.fixture(scope="module")
def network():
    from ml.model import network

    return network


def _inputs(batch=2, rows=32, cols=48, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.uniform(0, 1, (batch, rows, cols, 1)).astype(np.float32),
        "header": rng.normal(0, 1, (batch, 8)).astype(np.float32),
    }


def test_the_network_gives_masks_presence_and_suitability_for_any_stride_multiple(network):
    model = network.build_model(network.default_widths(base=4, depth=2), depth=2)
    for rows, cols in [(32, 48), (64, 16)]:
        out = model(_inputs(rows=rows, cols=cols))
        assert tuple(out["masks"].shape) == (2, rows, cols, len(ARTIFACT_TYPES))
        assert tuple(out["presence"].shape) == (2, len(ARTIFACT_TYPES))
        assert tuple(out["suitability"].shape) == (2, 1)


def test_a_saved_model_loads_back_with_the_same_outputs(network, tmp_path):
    model = network.build_model(network.default_widths(base=4, depth=2), depth=2)
    film = model.get_layer("film_bottb")
    # Non-zero FiLM weights so the header really changes the output.
    film.dense.kernel.assign(np.full(film.dense.kernel.shape, 0.1, np.float32))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = network.load(path)
    x = _inputs()
    for key, value in model(x).items():
        np.testing.assert_allclose(np.asarray(loaded(x)[key]), np.asarray(value), atol=1e-6)
    assert network.model_widths(loaded) == network.default_widths(base=4, depth=2)
    assert loaded.get_layer("film_bottb").get_config()["channels"] == 16


def test_the_header_changes_the_output_through_film(network):
    model = network.build_model(network.default_widths(base=4, depth=2), depth=2)
    for layer in model.layers:
        if isinstance(layer, network.FiLM):
            layer.dense.kernel.assign(np.full(layer.dense.kernel.shape, 0.2, np.float32))
    a = _inputs(seed=1)
    b = {"image": a["image"], "header": a["header"] + 1.0}
    assert not np.allclose(np.asarray(model(a)["masks"]), np.asarray(model(b)["masks"]))


def test_the_mask_loss_is_lower_for_the_right_mask_and_round_trips_its_config(network):
    loss = network.MaskLoss(class_weights=[2.0] + [1.0] * 9, dice_weight=0.5)
    truth = np.zeros((1, 8, 8, 10), np.float32)
    truth[0, 2:5, 2:5, 0] = 1
    right = np.clip(truth, 0.02, 0.98)
    wrong = np.clip(1 - truth, 0.02, 0.98)
    assert float(loss(truth, right)) < float(loss(truth, wrong))
    again = network.MaskLoss.from_config(loss.get_config())
    assert again.class_weights == loss.class_weights and again.dice_weight == 0.5


def test_the_mask_loss_keeps_its_gradient_on_a_saturated_channel(network):
    # A channel far below any clip (logit -30: probability ~1e-13) on a pixel that has the
    # type: the BCE term's gradient with respect to that logit is (sigmoid(z) - t) / N, as
    # binary cross-entropy on logits gives, not zero (a clipped probability gave none, and a
    # type whose channel fell there never learnt again).
    import tensorflow as tf

    loss = network.MaskLoss(dice_weight=0.0)
    truth = np.zeros((1, 4, 4, 10), np.float32)
    truth[0, 1, 1, 3] = 1.0
    logits = tf.Variable(np.full(truth.shape, -30.0, np.float32))
    with tf.GradientTape() as tape:
        value = loss(truth, tf.sigmoid(logits))
    grad = tape.gradient(value, logits).numpy()
    n = truth.size
    np.testing.assert_allclose(grad[0, 1, 1, 3], (1 / (1 + np.exp(30.0)) - 1.0) / n, rtol=1e-3)
    np.testing.assert_allclose(grad[0, 0, 0, 3], 1 / (1 + np.exp(30.0)) / n, rtol=1e-2)
    # and its value is the BCE of those logits (softplus(z) - t z, averaged)
    expected = np.mean(np.logaddexp(0.0, -30.0) - truth * -30.0)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_a_fresh_network_starts_its_masks_at_the_prior_not_at_one_half(network):
    model = network.build_model(network.default_widths(base=4, depth=2), depth=2)
    bias = np.asarray(model.get_layer("mask_logits").get_weights()[1])
    np.testing.assert_allclose(bias, network.MASK_PRIOR_LOGIT)
    masks = np.asarray(model(_inputs())["masks"])
    assert 0.001 < float(np.median(masks)) < 0.1  # ~0.01, not the 0.5 of a zero bias


def test_conv_inputs_describe_the_graph_the_builder_makes(network):
    model = network.build_model(network.default_widths(base=4, depth=3), depth=3)
    for name in network.conv_names(3):
        sources = network.conv_inputs(name, 3)
        expected = sum(1 if s == "image" else network.model_widths(model)[s] for s in sources)
        assert model.get_layer(name).kernel.shape[2] == expected


def _run_on_jax(code: str, *args: object) -> None:
    """Run ``code`` in a fresh Python process on Keras's JAX backend (this one runs on
    TensorFlow), with ``args`` as ``sys.argv[1:]``; it must succeed."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("which", ["fresh", "shipped-pruned"])
def test_the_same_weights_give_the_same_outputs_on_the_jax_backend(network, tmp_path, which):
    """JAX is a test requirement (requirements/dev.txt): the GPU box serves the model on JAX."""

    from ml.pipeline import SHIPPED

    if which == "fresh":
        model = network.build_model(network.default_widths(base=4, depth=2), depth=2)
        path = tmp_path / "m.keras"
        model.save(path)
        x = _inputs()
    else:
        path = SHIPPED["pruned"]
        model = network.load(path)
        x = _inputs(batch=2, rows=64, cols=80)
    np.savez(tmp_path / "x.npz", **x)
    expected = {k: np.asarray(v) for k, v in model(x).items()}
    code = (
        "import numpy as np, sys, keras; assert keras.backend.backend() == 'jax'; "
        "from ml.model import network; "
        "x = dict(np.load(sys.argv[2])); m = network.load(sys.argv[1]); "
        "np.savez(sys.argv[3], **{k: np.asarray(v) for k, v in m(x).items()})"
    )
    _run_on_jax(code, path, tmp_path / "x.npz", tmp_path / "y.npz")
    got = np.load(tmp_path / "y.npz")
    assert set(got.files) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, atol=1e-4, err_msg=name)


def test_the_jitted_stateless_call_kept_on_the_device_gives_predict_s_probabilities(tmp_path):
    """KerasProbabilities.predict_on_device (the GPU path: a jitted ``stateless_call`` whose
    outputs are handed over through DLPack) gives what ``predict_probabilities`` gives. Run on
    JAX's CPU, NumPy taking the DLPack hand-over that CuPy takes on a GPU; a TensorFlow process
    has no such path."""

    from ml.model import network
    from ml.pipeline import SHIPPED, KerasProbabilities

    assert KerasProbabilities(network.load(SHIPPED["pruned"])).predict_on_device({}, np) is None
    np.savez(tmp_path / "x.npz", **_inputs(batch=3, rows=64, cols=80))
    code = (
        "import numpy as np, sys, keras; assert keras.backend.backend() == 'jax'; "
        "from ml.model import network; from ml.pipeline import SHIPPED, KerasProbabilities; "
        "x = dict(np.load(sys.argv[1])); m = KerasProbabilities(network.load(SHIPPED['pruned'])); "
        "assert m.predict_on_device(x, np) is None; "  # JAX on the CPU: not a GPU
        "m._on_device = m._device_call(require_gpu=False); "
        "kept = m.predict_on_device(x, np); host = m.predict_probabilities(x); "
        "assert kept is not None and type(kept['probabilities']) is np.ndarray; "
        "np.savez(sys.argv[2], **{f'kept_{k}': v for k, v in kept.items()}, "
        "**{f'host_{k}': v for k, v in host.items()})"
    )
    _run_on_jax(code, tmp_path / "x.npz", tmp_path / "y.npz")
    got = np.load(tmp_path / "y.npz")
    for name in ("probabilities", "presence", "suitability"):
        kept, host = got[f"kept_{name}"], got[f"host_{name}"]
        assert kept.shape == host.shape and kept.dtype == np.float32
        np.testing.assert_allclose(kept, host, atol=1e-5, err_msg=name)
    assert got["kept_probabilities"].shape == (3, 10, 64, 80)  # channel-first, as the masks use


def test_mask_modes_serve_pixel_gated_or_whole_slice_masks_and_survive_a_save(network, tmp_path):
    model = network.build_model(network.default_widths(base=4, depth=2), depth=2)
    modes = ["pixel"] * 6 + ["whole", "gated", "pixel", "whole"]
    served = network.with_mask_modes(model, modes)
    x = _inputs()
    plain, out = model.predict_on_batch(x), served.predict_on_batch(x)
    presence = plain["presence"][:, None, None, :]
    np.testing.assert_allclose(out["masks"][..., 0], plain["masks"][..., 0], atol=1e-6)
    np.testing.assert_allclose(
        out["masks"][..., 7], plain["masks"][..., 7] * presence[..., 7], atol=1e-6
    )
    np.testing.assert_allclose(
        out["masks"][..., 6], np.broadcast_to(presence[..., 6], out["masks"][..., 6].shape),
        atol=1e-6,
    )  # fmt: skip
    np.testing.assert_allclose(out["presence"], plain["presence"], atol=1e-6)
    served.save(tmp_path / "served.keras")
    loaded = network.load(tmp_path / "served.keras")
    assert network.mask_modes(loaded) == modes
    assert loaded.count_params() == model.count_params()
    np.testing.assert_allclose(loaded.predict_on_batch(x)["masks"], out["masks"], atol=1e-6)
    stripped = network.with_mask_modes(loaded, None)  # what training starts from
    assert network.mask_modes(stripped) == ["pixel"] * len(ARTIFACT_TYPES)
    np.testing.assert_allclose(stripped.predict_on_batch(x)["masks"], plain["masks"], atol=1e-6)


def _check_image_modes(network, model, modes, x, tmp_path):
    """A model serving ``modes`` on ``x``: the graph equals gpu_ops' NumPy definition of the
    modes; a save, stripping and an ONNX export (cut at the probabilities, with the modes read
    from the file and applied by the pipeline; or served whole) give the same masks. Returns
    the plain and the served outputs."""
    from gpu_ops.scoring import apply_mask_modes
    from ml.model.export import export_onnx
    from ml.pipeline import OnnxModel, onnx_scoring_graph

    served = network.with_mask_modes(model, modes)
    plain, out = model.predict_on_batch(x), served.predict_on_batch(x)
    expected = apply_mask_modes(
        np.moveaxis(plain["masks"], -1, 1), plain["presence"], modes, images=x["image"][..., 0]
    )
    np.testing.assert_allclose(np.moveaxis(out["masks"], -1, 1), expected, atol=1e-6)
    served.save(tmp_path / "moded.keras")
    loaded = network.load(tmp_path / "moded.keras")
    assert network.mask_modes(loaded) == modes
    np.testing.assert_allclose(loaded.predict_on_batch(x)["masks"], out["masks"], atol=1e-6)
    stripped = network.with_mask_modes(loaded, None)
    np.testing.assert_allclose(stripped.predict_on_batch(x)["masks"], plain["masks"], atol=1e-6)
    export_onnx(tmp_path / "moded.keras", tmp_path / "moded.onnx")
    cut = onnx_scoring_graph((tmp_path / "moded.onnx").read_bytes())
    assert cut is not None and cut.modes == tuple(modes)  # read from the file
    onnx = OnnxModel(tmp_path / "moded.onnx")
    assert onnx.modes == tuple(modes)  # cut: the pipeline applies the modes
    np.testing.assert_allclose(onnx.predict_on_batch(x)["masks"], out["masks"], atol=1e-5)
    whole = OnnxModel(tmp_path / "moded.onnx", cut=False)  # the file as exported
    np.testing.assert_allclose(whole.predict_on_batch(x)["masks"], out["masks"], atol=1e-5)
    return plain, out


def _noisy_heads(batch=2, rows=48, cols=64, sigma=(0.06, 0.01), seed=0):
    """Slices of a bright disc (the head, a dark hole inside: CSF) with Rician noise of
    ``sigma`` per slice, the head's level near 1 as after normalisation."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:rows, :cols]
    r = np.hypot((yy - rows / 2) / (rows * 0.35), (xx - cols / 2) / (cols * 0.35))
    clean = np.where(r < 1, 0.9, 0.0) * np.where(r < 0.3, 0.1, 1.0)
    out = []
    for s in sigma[:batch]:
        noise = rng.normal(0, s, (2, rows, cols))
        out.append(np.hypot(clean + noise[0], noise[1]))
    return np.asarray(out, np.float32)


def test_the_image_modes_are_their_maps_times_presence_in_keras_onnx_and_after_a_save(
    network, tmp_path
):
    """The ``line``, ``level`` and ``head`` modes in the graph equal gpu_ops' NumPy
    definitions; they survive a save, an ONNX export (cut and whole: the same masks) and
    stripping, and the ONNX file names its modes (the level map's constants would confuse the
    older reading of the line selector)."""
    from gpu_ops.scoring import IMAGE_MAPS, head_map, level_map, line_map

    assert tuple(network.IMAGE_MAP_OPS) == tuple(IMAGE_MAPS)  # one definition each, same order
    model = network.build_model(network.default_widths(base=4, depth=2), depth=2)
    modes = ["whole", "head"] + ["pixel"] * 3 + ["line"] + ["pixel"] * 3 + ["level"]
    x = _inputs(rows=48, cols=64)
    x["image"] = _noisy_heads()[..., None]
    x["image"][1, 7] += 2.0  # a zipper row in the quiet slice
    plain, out = _check_image_modes(network, model, modes, x, tmp_path)
    line = line_map(x["image"][..., 0])
    assert (line[1].max(axis=1) > 0).nonzero()[0].tolist() == [6, 7, 8]
    np.testing.assert_allclose(out["masks"][1, 7, :, 5], plain["presence"][1, 5], atol=1e-6)
    level = level_map(x["image"][..., 0])
    assert level[0].max() > 0.5 and level[1].max() < 0.5  # noisy air; quiet
    head = head_map(x["image"][..., 0])
    assert 0.2 < head.mean() < 0.8  # the disc, not the air
    np.testing.assert_allclose(out["masks"][..., 1], head * plain["presence"][:, 1, None, None],
                               atol=1e-6)  # fmt: skip


def test_unknown_mask_modes_are_refused(network):
    with pytest.raises(ValueError, match="modes"):
        network.MaskMode(["pixel"] * 9 + ["blurred"])
    with pytest.raises(ValueError, match="modes"):
        network.MaskMode(["pixel"] * 3)


def test_resetting_a_dead_mask_channel_redraws_only_that_channel(network):
    from ml import ARTIFACT_TYPES

    model = network.build_model(network.default_widths(base=4, depth=2), depth=2)
    layer = model.get_layer("mask_logits")
    kernel, bias = (np.array(w) for w in layer.get_weights())
    dead = ARTIFACT_TYPES.index("zipper")
    kernel[..., dead], bias[dead] = 0.0, -27.0  # what a channel that died looks like
    bias[0] = 1.5
    layer.set_weights([kernel, bias])
    network.reset_mask_channels(model, ["zipper"], seed=4)
    new_kernel, new_bias = (np.array(w) for w in layer.get_weights())
    np.testing.assert_allclose(new_bias[dead], network.MASK_PRIOR_LOGIT)
    assert np.abs(new_kernel[..., dead]).max() > 0  # drawn again, not left at zero
    others = [k for k in range(len(ARTIFACT_TYPES)) if k != dead]
    np.testing.assert_array_equal(new_kernel[..., others], kernel[..., others])
    np.testing.assert_array_equal(new_bias[others], bias[others])
    again = network.build_model(network.default_widths(base=4, depth=2), depth=2)
    again.get_layer("mask_logits").set_weights([kernel, bias])
    network.reset_mask_channels(again, ["zipper"], seed=4)
    np.testing.assert_array_equal(again.get_layer("mask_logits").get_weights()[0], new_kernel)
    with pytest.raises(ValueError, match="unknown artifact types"):
        network.reset_mask_channels(model, ["zippers"])
