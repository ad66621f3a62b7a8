"""Evaluation figures on hand-made counts: ROC AUC, dataset-level IoU, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from ml.model.evaluate import calibration, iou_summary, roc_auc, roc_curve


def test_roc_auc_matches_hand_counts():
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.2, 0.1])) == 1.0
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    # 3 of 4 positive/negative pairs ordered right.
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 0.1])) == pytest.approx(0.75)
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(np.array([1, 1]), np.array([0.5, 0.2])) is None


def test_the_roc_curve_runs_from_the_origin_to_one_one():
    fpr, tpr = roc_curve(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 0.1]))
    assert (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)


def test_tied_scores_make_one_step_of_the_roc_curve_whatever_their_order():
    """Labels [1, 0, 1, 0] with scores [.5, .5, .2, .2]: the curve's area is the AUC, 0.5,
    in either order of the tied samples (it was 0.75 one way and 0.25 the other)."""
    labels = np.array([1, 0, 1, 0])
    for scores in (np.array([0.5, 0.5, 0.2, 0.2]), np.array([0.2, 0.2, 0.5, 0.5])):
        order = [1, 0, 3, 2]
        for lab, sco in ((labels, scores), (labels[order], scores[order])):
            fpr, tpr = roc_curve(lab, sco)
            assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(lab, sco)) == pytest.approx(0.5)


def test_iou_sums_intersections_and_unions_over_slices_and_weights_by_frequency():
    k = 10
    inter = np.zeros((3, k), np.int64)
    union = np.zeros((3, k), np.int64)
    present = np.zeros((3, k), bool)
    inter[0, 0], union[0, 0], present[0, 0] = 9, 10, True
    inter[1, 0], union[1, 0], present[1, 0] = 1, 10, True  # motion: 10/20 = 0.5, 2 slices
    inter[2, 1], union[2, 1], present[2, 1] = 0, 5, True  # ghosting: 0, 1 slice
    union[2, 2] = 4  # aliasing predicted where there is none: IoU 0, weight 0
    summary = iou_summary(inter, union, present)
    assert summary["iou"]["motion"] == pytest.approx(0.5)
    assert summary["iou"]["ghosting"] == 0.0
    assert summary["iou"]["aliasing"] == 0.0
    assert summary["iou"]["noise"] is None
    assert summary["frequency_weighted_iou"] == pytest.approx((2 * 0.5 + 1 * 0.0) / 3)


def test_calibration_is_zero_for_a_perfectly_calibrated_score():
    diagnostic = np.array([1, 1, 0, 0], bool)
    assert calibration(diagnostic, np.array([1.0, 1.0, 0.0, 0.0]))["ece"] == 0.0
    assert calibration(diagnostic, np.array([0.0, 0.0, 1.0, 1.0]))["ece"] == 1.0


def test_the_mode_grid_counts_equal_brute_force_masks():
    from ml.model.evaluate import _grid_counts

    rng = np.random.default_rng(0)
    probs = rng.uniform(0, 1, (6, 7, 10))
    presence = rng.uniform(0, 1, 10)
    truth = rng.uniform(0, 1, (6, 7, 10)) > 0.6
    line, level = rng.uniform(0, 1, (2, 6, 7))
    head = (rng.uniform(0, 1, (6, 7)) > 0.5).astype(np.float64)
    grid = np.array([0.2, 0.5, 0.8])
    out = {"grid_intersection": np.zeros((6, 3, 10), np.int64),
           "grid_union": np.zeros((6, 3, 10), np.int64)}  # fmt: skip
    _grid_counts(out, probs, presence, np.stack([line, level, head], axis=-1), truth, grid)
    # In the order of MASK_MODES: pixel, gated, whole, line, level, head.
    variants = [probs, probs * presence, np.broadcast_to(presence, probs.shape),
                line[:, :, None] * presence, level[:, :, None] * presence,
                head[:, :, None] * presence]  # fmt: skip
    for m, variant in enumerate(variants):
        for t, value in enumerate(grid):
            pred = variant >= value
            inter, union = (pred & truth).sum((0, 1)), (pred | truth).sum((0, 1))
            np.testing.assert_array_equal(out["grid_intersection"][m, t], inter)
            np.testing.assert_array_equal(out["grid_union"][m, t], union)


def test_platt_scaling_recovers_a_known_calibration_and_keeps_the_ranking():
    from ml.model.evaluate import fit_platt, roc_auc

    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 4000)
    truth_a, truth_b = 0.5, 1.0  # an over-confident score shifted towards "non-diagnostic"
    diagnostic = rng.uniform(size=z.size) < 1 / (1 + np.exp(-(truth_a * z + truth_b)))
    p = 1 / (1 + np.exp(-z))
    a, b = fit_platt(diagnostic, p)
    assert abs(a - truth_a) < 0.1 and abs(b - truth_b) < 0.15
    q = 1 / (1 + np.exp(-(a * z + b)))
    assert roc_auc(~diagnostic, 1 - q) == roc_auc(~diagnostic, 1 - p)
    assert fit_platt(np.ones(5, bool), np.full(5, 0.3)) == (1.0, 0.0)  # one class: unchanged


def test_the_calibration_layer_serves_platt_scaled_suitability_and_survives_a_save(tmp_path):
    from ml.model import network

    plain = network.build_model(network.default_widths(base=2, depth=2), depth=2)
    served = network.with_calibration(network.with_working_size(plain, 32), (0.5, -0.25))
    assert network.suitability_calibration(served) == (0.5, -0.25)
    x = {"image": np.random.default_rng(1).uniform(0, 1, (2, 32, 48, 1)).astype(np.float32),
         "header": np.zeros((2, 8), np.float32)}  # fmt: skip
    raw = np.asarray(plain.predict_on_batch(x)["suitability"], np.float64)
    expected = 1 / (1 + np.exp(-(0.5 * np.log(raw / (1 - raw)) - 0.25)))
    np.testing.assert_allclose(served.predict_on_batch(x)["suitability"], expected, atol=1e-5)
    # Mask modes and the working size keep the calibration; a save/load keeps all three.
    moded = network.with_mask_modes(served, ["gated"] * network.N_TYPES)
    moded.save(tmp_path / "m.keras")
    loaded = network.load(tmp_path / "m.keras")
    assert network.suitability_calibration(loaded) == (0.5, -0.25)
    assert network.working_size(loaded) == 32 and network.mask_modes(loaded)[0] == "gated"
    np.testing.assert_allclose(loaded.predict_on_batch(x)["suitability"], expected, atol=1e-5)
    stripped = network.with_calibration(loaded, None)
    np.testing.assert_allclose(stripped.predict_on_batch(x)["suitability"], raw, atol=1e-6)
    with pytest.raises(ValueError):
        network.SuitabilityCalibration(-1.0, 0.0)


class _Fixed:
    """A model that answers the given outputs, batch after batch."""

    def __init__(self, answers):
        self.answers = list(answers)

    def predict_on_batch(self, x):
        return self.answers.pop(0)


def _batches(rng, n_batches=2, size=4, shape=(24, 32)):
    from ml import ARTIFACT_TYPES

    k = len(ARTIFACT_TYPES)
    batches = []
    for n in range(n_batches):
        masks = np.zeros((size, *shape, k), np.float32)
        for b in range(size):
            t = (n * size + b) % 4  # types 0-3, each on a quarter of the slices
            r, c = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
            masks[b, r : r + 8, c : c + 8, t] = rng.uniform(0.5, 1.0)  # soft, all >= 1/2
            masks[b, r + 8 : r + 10, c : c + 8, t] = 0.3  # under one half: not the artifact's
        x = {"image": rng.uniform(0, 1, (size, *shape, 1)).astype(np.float32)}
        batches.append((x, {"masks": masks}))
    return batches


def test_the_tuned_batch_iou_is_one_for_exact_masks_and_weights_types_by_slices():
    from ml.model.evaluate import tuned_batch_iou

    batches = _batches(np.random.default_rng(0))
    exact = [
        {"masks": (y["masks"] >= 0.5).astype(np.float32), "presence": y["masks"].max(axis=(1, 2))}
        for _, y in batches
    ]
    assert tuned_batch_iou(_Fixed(exact), batches) == pytest.approx(1.0)
    # Only the first type found, exactly; every other type's masks and presence 0: the
    # frequency-weighted mean is that type's share of the slices that hold a type.
    truth = np.concatenate([y["masks"] >= 0.5 for _, y in batches]).any(axis=(1, 2))
    first = truth[:, 0].sum() / truth.sum()
    only_first = []
    for answer in exact:
        masks = answer["masks"].copy()
        masks[..., 1:] = 0
        only_first.append({"masks": masks, "presence": np.zeros_like(answer["presence"])})
    assert first == 0.25
    assert tuned_batch_iou(_Fixed(only_first), batches) == pytest.approx(first)
    nothing = [{"masks": np.zeros_like(a["masks"]), "presence": np.zeros_like(a["presence"])}
               for a in exact]  # fmt: skip
    assert tuned_batch_iou(_Fixed(nothing), batches) == 0.0


def test_a_presence_stack_is_kept_only_where_the_k_space_ranks_the_slices_better():
    from ml import ARTIFACT_TYPES
    from ml.model.evaluate import STACK_MIN_GAIN, fit_presence_stack

    rng = np.random.default_rng(0)
    n, k = 300, len(ARTIFACT_TYPES)
    present = rng.uniform(0, 1, (n, k)) < 0.3
    # The network: informative for every type but Gibbs, where it is at chance.
    presence = np.clip(0.5 + 0.35 * (present - 0.5) + rng.normal(0, 0.15, (n, k)), 0, 1)
    gibbs = ARTIFACT_TYPES.index("gibbs")
    presence[:, gibbs] = rng.uniform(0, 1, n)
    # The k-space: a zero-filled edge on the Gibbs slices, noise elsewhere.
    kspace = rng.normal(0.8, 0.2, (n, 2)) + 1.5 * present[:, [gibbs]]  # both axes
    present[:4, ARTIFACT_TYPES.index("zipper")] = True  # too few of a type: never fitted
    present[4:, ARTIFACT_TYPES.index("zipper")] = False
    # The network's noise presence is at chance too, and the k-space would rank noise slices
    # in this made-up split, but the measurement describes a zero-filled acquisition only:
    # noise is not one of STACK_TYPES and is never fitted.
    noise = ARTIFACT_TYPES.index("noise")
    presence[:, noise] = rng.uniform(0, 1, n)
    kspace = kspace + 3.0 * present[:, [noise]]
    stack, summary = fit_presence_stack(present, presence.astype(np.float32), kspace)
    assert stack is not None and stack.types == (gibbs,)
    assert summary["noise"]["auc_stacked"] is None
    assert summary["gibbs"]["kept"] == 1.0
    assert summary["gibbs"]["auc_stacked"] >= summary["gibbs"]["auc_network"] + STACK_MIN_GAIN
    assert summary["gibbs"]["auc_stacked"] > 0.8
    assert summary["zipper"]["auc_stacked"] is None and summary["zipper"]["kept"] == 0.0
    assert all(summary[name]["kept"] == 0.0 for name in ARTIFACT_TYPES if name != "gibbs")
    stacked = stack.apply(presence.astype(np.float32), kspace.astype(np.float32))
    assert roc_auc(present[:, gibbs], stacked[:, gibbs]) == pytest.approx(
        summary["gibbs"]["auc_stacked"], abs=1e-6
    )
    # Without any type to gain, no stack.
    assert fit_presence_stack(present, presence, rng.normal(0, 1, (n, 2)))[0] is None


def test_the_logistic_fit_recovers_known_weights():
    from ml.model.evaluate import fit_logistic

    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (20000, 2))
    truth = np.array([1.5, -0.75, 0.3])
    y = rng.uniform(0, 1, len(x)) < 1 / (1 + np.exp(-(x @ truth[:2] + truth[2])))
    np.testing.assert_allclose(fit_logistic(x, y, l2=0.0), truth, atol=0.08)
