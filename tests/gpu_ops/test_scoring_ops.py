"""The scoring pipeline's pre/post-processing kernels equal their NumPy definitions in
``ml.model.preprocess`` and the pipeline's thresholding, on NumPy and (where present) CuPy."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_ops import array_module, to_numpy
from gpu_ops.scoring import (
    IMAGE_MAPS,
    LEVEL_BLOCK,
    apply_mask_modes,
    canonical_batch,
    head_map,
    level_map,
    line_map,
    normalise_batch,
    pad_batch,
    serve_masks,
    threshold_masks,
)
from ml.model.preprocess import canonical, normalise, pad_to_stride
from tests.gpu_ops.phantoms import BACKEND_PARAMS, backend, head_phantom


def _slices():
    image, _ = head_phantom(96)
    rng = np.random.default_rng(1)
    noisy = (image * 700 + rng.normal(0, 20, image.shape)).astype(np.float32)
    return np.stack([noisy, noisy[:, ::-1] * 3, np.zeros_like(noisy)])[:, :, :80]


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_normalising_a_batch_equals_normalising_each_slice(name):
    xp = backend(name)
    slices = _slices()
    out = normalise_batch(xp.asarray(slices))
    assert array_module(out) is xp and out.dtype == xp.float32
    expected = np.stack([normalise(s) for s in slices])
    np.testing.assert_array_equal(to_numpy(out), expected)
    assert not to_numpy(out)[2].any()  # an all-zero slice stays zero


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_padding_and_orientation_equal_the_numpy_definitions(name):
    xp = backend(name)
    slices = _slices()
    np.testing.assert_array_equal(
        to_numpy(pad_batch(xp.asarray(slices), 16)), pad_to_stride(slices)
    )
    for pe in ("ROW", "COL"):
        np.testing.assert_array_equal(
            to_numpy(canonical_batch(xp.asarray(slices), pe)), canonical(slices, pe)
        )
    with pytest.raises(ValueError):
        canonical_batch(xp.asarray(slices), "OBLIQUE")


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_thresholding_crops_the_padding_and_puts_types_first(name):
    xp = backend(name)
    rng = np.random.default_rng(2)
    probabilities = rng.random((2, 48, 96, 10), dtype=np.float32)
    thresholds = np.linspace(0.1, 0.9, 10, dtype=np.float32)
    out = threshold_masks(xp.asarray(probabilities), 40, 90, thresholds)
    assert array_module(out) is xp and out.dtype == xp.uint8 and out.shape == (2, 10, 40, 90)
    expected = np.moveaxis((probabilities[:, :40, :90] >= thresholds).astype(np.uint8), -1, 1)
    np.testing.assert_array_equal(to_numpy(out), expected)


@pytest.mark.parametrize("name", BACKEND_PARAMS)
@pytest.mark.parametrize("grid", ["padded", "working"])
@pytest.mark.parametrize("stacked", [False, True])
def test_serving_masks_type_by_type_equals_thresholding_the_served_masks(name, grid, stacked):
    """serve_masks (modes, crop or resize, thresholds, plane by plane or a type's planes at
    once) = threshold_masks of the masks that apply_mask_modes serves, resized as a whole: the
    same bytes; an image mode's type = its map resized, times the presence (what the
    evaluation tunes)."""
    from ml.model.preprocess import upsample_probabilities

    xp = backend(name)
    rng = np.random.default_rng(3)
    probabilities = rng.random((3, 10, 48, 64), dtype=np.float32)
    presence = rng.random((3, 10), dtype=np.float32)
    images = 0.1 * rng.random((3, 48, 64), dtype=np.float32)
    images[:, 8:40, 8:56] += 0.8  # a head for the "head" types
    images[:, 20] += 1.0  # a line for the "line" type to find
    modes = [
        "pixel",
        "gated",
        "whole",
        "head",
        "gated",
        "line",
        "pixel",
        "level",
        "whole",
        "head",
    ]
    thresholds = np.linspace(0.05, 0.9, 10, dtype=np.float32)
    served = apply_mask_modes(
        xp.asarray(probabilities), xp.asarray(presence), modes, xp.asarray(images)
    )
    assert array_module(served) is xp
    channels_last = xp.moveaxis(served, 1, -1)
    if grid == "padded":
        rows, cols, resize = 40, 50, None
        expected = threshold_masks(channels_last, rows, cols, thresholds)
    else:
        rows, cols = 96, 100

        def resize(plane):  # one plane, or the stack of them (stacked)
            return upsample_probabilities(plane, (rows, cols), axes=(-2, -1))

        whole = upsample_probabilities(channels_last, (rows, cols))
        expected = threshold_masks(whole, rows, cols, thresholds)
    for k, mode in enumerate(modes):
        if mode in IMAGE_MAPS:
            image_map = IMAGE_MAPS[mode](xp.asarray(images))[:, :rows, :cols]
            if grid == "working":
                image_map = upsample_probabilities(IMAGE_MAPS[mode](xp.asarray(images)),
                                                   (rows, cols), axes=(1, 2))  # fmt: skip
            served_k = image_map * xp.asarray(presence)[:, k, None, None]
            expected[:, k] = (served_k >= thresholds[k]).astype(xp.uint8)
    got = serve_masks(
        xp.asarray(probabilities), xp.asarray(presence), modes, thresholds, rows, cols, resize,
        images=xp.asarray(images), stacked=stacked,
    )  # fmt: skip
    assert to_numpy(got)[:, 5].any()  # the line type marks pixels
    assert 0 < to_numpy(got)[:, [3, 9]].mean() < 1  # the head types mark the head
    assert array_module(got) is xp and got.dtype == xp.uint8 and got.shape == (3, 10, rows, cols)
    np.testing.assert_array_equal(to_numpy(got), to_numpy(expected))
    # Against the served masks resized type by type (map x presence, then resize): the same
    # but for float rounding at the threshold.
    whole_image_modes = threshold_masks(
        channels_last if grid == "padded" else whole, rows, cols, thresholds
    )
    image_types = [k for k, m in enumerate(modes) if m in IMAGE_MAPS]
    differ = to_numpy(got)[:, image_types] != to_numpy(whole_image_modes)[:, image_types]
    assert differ.mean() < 1e-3
    # Written into a strided view (the transposed masks of a COL series) just the same.
    target = xp.zeros((3, 10, cols, rows), dtype=xp.uint8)
    serve_masks(
        xp.asarray(probabilities), xp.asarray(presence), modes, thresholds, rows, cols, resize,
        out=xp.swapaxes(target, -1, -2), images=xp.asarray(images), stacked=stacked,
    )  # fmt: skip
    np.testing.assert_array_equal(to_numpy(xp.swapaxes(target, -1, -2)), to_numpy(expected))


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_mask_modes_are_the_exported_layer_s_arithmetic(name):
    xp = backend(name)
    rng = np.random.default_rng(4)
    m = rng.random((2, 10, 5, 7), dtype=np.float32)
    p = rng.random((2, 10), dtype=np.float32)
    modes = ["pixel", "gated", "whole"] * 3 + ["pixel"]
    served = to_numpy(apply_mask_modes(xp.asarray(m), xp.asarray(p), modes))
    pick = {
        key: np.array([v == key for v in modes], np.float32) for key in ("pixel", "gated", "whole")
    }
    # MaskMode.call: masks * pixel + masks * p * gated + ones * p * whole (channels-last there).
    m_last, q = np.moveaxis(m, 1, -1), p[:, None, None, :]
    layer = (
        m_last * pick["pixel"]
        + m_last * q * pick["gated"]
        + np.ones_like(m_last) * q * pick["whole"]
    )
    np.testing.assert_array_equal(np.moveaxis(served, 1, -1), layer)
    plain = xp.asarray(m)
    assert apply_mask_modes(plain, xp.asarray(p), ["pixel"] * 10) is plain  # nothing to do


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_the_line_map_marks_the_row_of_a_zipper_and_nothing_else(name):
    """A zipper after canonicalisation: one row along phase-encode (the last axis) whose
    pixels carry interference of random phase; the map marks that row and its neighbours."""
    xp = backend(name)
    image, _ = head_phantom(96)
    rng = np.random.default_rng(5)
    slices = np.stack([image, image, image]).astype(np.float32)
    slices += rng.normal(0, 0.02, slices.shape).astype(np.float32)
    interference = np.abs(0.5 * np.exp(2j * np.pi * rng.random((2, 96)))
                          + rng.normal(0, 0.2, (2, 96)))  # fmt: skip
    slices[0, 30] += interference[0].astype(np.float32)
    slices[1, 71] += interference[1].astype(np.float32)
    out = line_map(xp.asarray(slices))
    assert array_module(out) is xp and out.dtype == xp.float32 and out.shape == slices.shape
    marked = to_numpy(out).max(axis=2) > 0
    assert np.flatnonzero(marked[0]).tolist() == [29, 30, 31]
    assert np.flatnonzero(marked[1]).tolist() == [70, 71, 72]
    assert to_numpy(out)[0, 30].mean() > 0.9  # the interference is far above LINE_LEVEL
    # No zipper: some row still stands out most (the presence gate is what turns it off), but
    # only where the head's edges cross it, not along its whole length.
    assert to_numpy(out)[2].sum() < 0.5 * to_numpy(out)[0].sum()
    assert (to_numpy(out) >= 0).all() and (to_numpy(out) <= 1).all()


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_the_level_map_marks_what_the_ground_truth_rule_marks_for_rician_noise(name):
    """Noise of three levels on a head phantom, judged by the ground truth's own rule
    (``ml.simulate.ground_truth``): noise everywhere, in the air only (Rayleigh's mean is
    above Gaussian's), and none; something bright (folded anatomy, a ghost) covers part of the
    air. The map, at 0.5, marks what the rule marks but for the head's edge."""
    from ml.simulate._common import head_and_reference
    from ml.simulate.ground_truth import ground_truth

    xp = backend(name)
    image, _ = head_phantom(128)
    clean = image.astype(np.float32)
    clean[:, :12] += 0.3 * clean[:, 64:76]  # something bright over part of the air
    clean /= float(head_and_reference(clean[None])[1][0])  # normalised: the head's p99 is 1
    rng = np.random.default_rng(7)
    slices, truths = [], []
    for sigma in (0.09, 0.05, 0.01):
        noise = rng.normal(0, sigma, (2, *clean.shape))
        noisy = np.hypot(clean + noise[0], noise[1]).astype(np.float32)
        slices.append(noisy)
        truths.append(ground_truth(clean, noisy)[0].astype(bool))
    out = to_numpy(level_map(xp.asarray(np.stack(slices))))
    assert out.dtype == np.float32 and out.shape == (3, 128, 128)
    assert (out >= 0).all() and (out <= 1).all()
    marked = out >= 0.5
    head = head_and_reference(clean[None])[0][0]
    # Everywhere: the map too.
    assert (marked[0] == truths[0]).mean() > 0.95 and marked[0].mean() > 0.95
    # The air only: the map marks air and never the head; it takes the head's edge (blocks of
    # LEVEL_BLOCK pixels, filled between the bright band and the head) for the head's (the
    # rule marks a few percent of the head: its dark CSF, where the noise is Rician too).
    assert (marked[1] == truths[1]).mean() > 0.8 and 0.3 < marked[1].mean() < 0.7
    assert (marked[1] & head).sum() < 0.01 * head.sum()
    # None.
    assert not marked[2].any() and not truths[2].any()


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_the_head_map_is_the_whole_head_and_none_of_the_air(name):
    """The head of a phantom (dark skull and sinus inside it: filled) under quiet and strong
    Rician noise, the scale of the network's input: the map holds all of it, and of the air
    only what the head's edge blocks (:data:`~gpu_ops.scoring.LEVEL_BLOCK` pixels) reach."""
    from scipy.ndimage import binary_dilation

    xp = backend(name)
    image, maps = head_phantom(128)
    rng = np.random.default_rng(9)
    slices = []
    for sigma in (0.01, 0.08):
        noise = rng.normal(0, sigma, (2, *image.shape))
        slices.append(np.hypot(image + noise[0], noise[1]).astype(np.float32))
    images = xp.asarray(np.stack(slices))
    out = head_map(images)
    assert array_module(out) is xp and out.dtype == xp.float32 and out.shape == (2, 128, 128)
    got = to_numpy(out)
    assert set(np.unique(got).tolist()) <= {0.0, 1.0}
    head = maps["head"].astype(bool)
    near = binary_dilation(head, np.ones((3, 3), bool), iterations=LEVEL_BLOCK - 1)
    for marked in got.astype(bool):
        assert marked[head].mean() > 0.97
        assert not marked[~near].any()
    # Served by the head mode: the presence on the map.
    p = np.array([[0.3] * 10, [0.8] * 10], np.float32)
    served = to_numpy(
        apply_mask_modes(
            xp.zeros((2, 10, 128, 128), dtype=xp.float32), xp.asarray(p), ["head"] * 10, images
        )
    )
    np.testing.assert_allclose(served, got[:, None] * p[:, :, None, None])


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_the_line_mode_needs_the_input_images(name):
    xp = backend(name)
    m = xp.zeros((1, 10, 8, 8), dtype=xp.float32)
    p = xp.ones((1, 10), dtype=xp.float32)
    modes = ["line"] + ["pixel"] * 7 + ["head", "level"]
    with pytest.raises(ValueError, match="needs the network's input images"):
        apply_mask_modes(m, p, modes)
    with pytest.raises(ValueError, match="needs the network's input images"):
        serve_masks(m, p, modes, np.full(10, 0.5, np.float32), 8, 8)


# --- presence from the acquisition's k-space ------------------------------------------------


def _acquired(sigma, seed=3):
    """A smooth head phantom with a scanner's Rician noise floor, as the data set's slices."""
    from scipy.ndimage import gaussian_filter

    from ml.data.slices import add_noise_floor

    image, _ = head_phantom(128)
    smooth = gaussian_filter(image[:, :112], 1.0).astype(np.float32)
    return add_noise_floor(smooth, sigma, np.random.default_rng(seed))


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_a_zero_filled_k_space_stands_out_of_the_other_artifacts(name):
    from gpu_ops.scoring import kspace_features
    from ml.simulate import simulate
    from ml.simulate.header import AcquisitionHeader

    xp = backend(name)
    header = AcquisitionHeader(rows=128, columns=112, phase_encode="ROW")
    truncated, others = [], []
    for sigma in (0.005, 0.02):
        base = _acquired(sigma)
        truncated += [simulate(base, "gibbs", s, header, seed=1) for s in (0.2, 0.6)]
        others += [base] + [
            simulate(base, kind, 0.5, header, seed=1)
            for kind in ("noise", "spike", "motion", "ghosting", "bias_field")
        ]
    batch = normalise_batch(xp.asarray(np.stack(truncated + others).astype(np.float32)))
    features = kspace_features(batch)
    assert array_module(features) is xp and features.shape == (len(batch), 2)
    got = to_numpy(features)
    expected = kspace_features(to_numpy(batch))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    n = len(truncated)
    # Both axes were truncated: each one's step clears every other slice's by a margin.
    assert got[:n].min(axis=0).min() > got[n:].max(axis=0).max() + 0.25, got
    # Units do not matter (the floor is relative to the peak); transposing swaps the axes.
    np.testing.assert_allclose(to_numpy(kspace_features(batch * 7.0)), got, atol=1e-4)
    swapped = to_numpy(kspace_features(xp.ascontiguousarray(batch.swapaxes(1, 2))))
    np.testing.assert_allclose(swapped, got[:, ::-1], atol=1e-4)


def test_k_space_features_refuse_a_single_image_and_survive_an_empty_one():
    from gpu_ops.scoring import kspace_features

    with pytest.raises(ValueError, match="must be"):
        kspace_features(np.zeros((32, 32), np.float32))
    out = kspace_features(np.zeros((2, 32, 48), np.float32))
    assert np.isfinite(out).all() and out.shape == (2, 2)
    assert kspace_features(np.zeros((0, 32, 48), np.float32)).shape == (0, 2)
    # A tiny slice: the inner window never takes the DC bin (a constant has no step at all).
    np.testing.assert_allclose(kspace_features(np.ones((1, 8, 12), np.float32)), 0.0, atol=1e-6)


def _stack():
    from gpu_ops.scoring import PresenceStack

    # gibbs (7) mostly from the k-space step, noise (9) mostly from the network.
    return PresenceStack(
        [7, 9],
        mean=[[0.0, 1.0], [0.5, 0.0]],
        scale=[[2.0, 0.5], [1.0, 1.0]],
        weights=[[0.5, 1.5], [2.0, 0.1]],
        bias=[-1.0, 0.25],
    )


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_a_presence_stack_is_a_logistic_regression_on_the_logit_and_the_k_space(name):
    xp = backend(name)
    rng = np.random.default_rng(0)
    presence = rng.uniform(0, 1, (5, 10)).astype(np.float32)
    presence[0, 7] = 0.0  # clipped before the logit, not -inf
    features = rng.uniform(0, 3, (5, 2)).astype(np.float32)
    stack = _stack()
    got = to_numpy(stack.apply(xp.asarray(presence), xp.asarray(features)))
    expected = presence.copy()
    for t, k in enumerate(stack.types):
        p = np.clip(presence[:, k].astype(np.float64), 1e-4, 1 - 1e-4)
        x = np.column_stack([np.log(p / (1 - p)), features.mean(axis=1)])  # both axes' mean
        z = ((x - stack.mean[t]) / stack.scale[t]) @ stack.weights[t] + stack.bias[t]
        expected[:, k] = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    untouched = [k for k in range(10) if k not in stack.types]
    np.testing.assert_array_equal(got[:, untouched], presence[:, untouched])


def test_a_presence_stack_survives_its_json_and_refuses_what_it_cannot_read():
    from gpu_ops.scoring import PRESENCE_STACK_INPUTS, PresenceStack
    from ml import ARTIFACT_TYPES

    stack = _stack()
    content = stack.to_json(ARTIFACT_TYPES)
    assert content["inputs"] == list(PRESENCE_STACK_INPUTS)
    assert set(content["types"]) == {"gibbs", "noise"}
    back = PresenceStack.from_json(content, ARTIFACT_TYPES)
    assert back is not None and back.types == stack.types
    rng = np.random.default_rng(1)
    presence, features = rng.uniform(0, 1, (3, 10)), rng.uniform(0, 2, (3, 2))
    np.testing.assert_allclose(back.apply(presence, features), stack.apply(presence, features))
    assert PresenceStack.from_json(None, ARTIFACT_TYPES) is None
    assert PresenceStack.from_json({**content, "types": {}}, ARTIFACT_TYPES) is None
    for bad, match in (
        ({**content, "inputs": ["presence_logit"]}, "reads"),
        ({**content, "types": {"ringing": content["types"]["gibbs"]}}, "unknown type"),
        ({**content, "types": {"gibbs": {"mean": [0, 0]}}}, "incomplete"),
        ({**content, "types": {"gibbs": {**content["types"]["gibbs"], "scale": [1, 0]}}},
         "positive"),
        ({**content, "types": {"gibbs": {**content["types"]["gibbs"], "weights": [1, 2, 3]}}},
         "inputs"),
        ({**content, "types": {"gibbs": {**content["types"]["gibbs"], "bias": float("nan")}}},
         "finite"),
        ([1, 2], "must be"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            PresenceStack.from_json(bad, ARTIFACT_TYPES)
