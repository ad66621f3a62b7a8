"""Evaluation on a held-out split: dataset-level IoU per type, suitability ROC AUC, calibration.

Definitions (the issue's):

- per-type IoU at dataset level: intersection and union of the thresholded mask and the ground
  truth, each *summed over all slices* (clean slices included), then divided;
- frequency-weighted mean IoU: the per-type IoUs weighted by the number of slices whose ground
  truth contains the type;
- suitability ROC AUC: non-diagnostic (positive) against ``1 - suitability``;
- calibration: expected calibration error of ``suitability`` as the probability of "diagnostic"
  over 10 equal-width bins, and the Brier score;
- the same IoU/AUC per source, sequence, field strength and matrix.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gpu_ops.scoring import (
    IMAGE_MAPS,
    MASK_MODES,
    PRESENCE_CLIP,
    PresenceStack,
    apply_mask_modes,
    kspace_features,
    stack_inputs,
)
from ml import ARTIFACT_TYPES
from ml.model.data import Split, load_split
from ml.model.preprocess import from_model_grid, to_model_grid


def roc_auc(labels: NDArray[Any], scores: NDArray[Any]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None with one class only."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order), np.float64)
    values = np.concatenate([pos, neg])[order]
    ranks[order] = np.arange(1, len(order) + 1)
    # Average ranks over ties.
    _, first, counts = np.unique(values, return_index=True, return_counts=True)
    for start, count in zip(first, counts, strict=True):
        if count > 1:
            ranks[order[start : start + count]] = start + (count + 1) / 2
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _unsuitability(suitability: NDArray[Any]) -> NDArray[Any]:
    """The score that ranks non-diagnostic slices first: ``-suitability`` in float64 (``1 -
    suitability`` in float32 merged calibrated values within 6e-8 of 1 into ties)."""
    return -np.asarray(suitability, np.float64)


def roc_curve(labels: NDArray[Any], scores: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """(false-positive rate, true-positive rate) over all thresholds, from (0, 0) to (1, 1).

    One point per distinct score: samples with equal scores pass a threshold together, so the
    curve (and its area, :func:`roc_auc`'s) does not depend on their order."""
    labels = np.asarray(labels, bool)
    values = np.asarray(scores, np.float64)
    order = np.argsort(-values, kind="mergesort")
    tp = np.cumsum(labels[order])
    fp = np.cumsum(~labels[order])
    # The last sample of each run of equal scores: where a threshold can fall.
    ends = np.flatnonzero(np.diff(values[order], append=-np.inf) != 0)
    tp = np.concatenate([[0], tp[ends]])
    fp = np.concatenate([[0], fp[ends]])
    return fp / max(fp[-1], 1), tp / max(tp[-1], 1)


def iou_summary(
    intersection: NDArray[Any], union: NDArray[Any], present: NDArray[Any]
) -> dict[str, Any]:
    """Per-type IoU and the frequency-weighted mean from per-slice ``(N, K)`` counts."""
    inter, uni = intersection.sum(axis=0), union.sum(axis=0)
    counts = present.sum(axis=0)
    per_type = {
        name: (float(inter[k] / uni[k]) if uni[k] > 0 else None)
        for k, name in enumerate(ARTIFACT_TYPES)
    }
    weighted = [(per_type[n], int(counts[k])) for k, n in enumerate(ARTIFACT_TYPES) if counts[k]]
    total = sum(c for _, c in weighted)
    fw = sum((v or 0.0) * c for v, c in weighted) / total if total else None
    return {
        "iou": per_type,
        "slices_with_type": {n: int(counts[k]) for k, n in enumerate(ARTIFACT_TYPES)},
        "frequency_weighted_iou": fw,
    }


def calibration(
    diagnostic: NDArray[Any], suitability: NDArray[Any], bins: int = 10
) -> dict[str, Any]:
    """Expected calibration error, Brier score and the reliability table of ``suitability``."""
    diagnostic = np.asarray(diagnostic, np.float64)
    p = np.asarray(suitability, np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        conf, acc = float(p[sel].mean()), float(diagnostic[sel].mean())
        ece += sel.mean() * abs(conf - acc)
        table.append({"bin": [float(edges[b]), float(edges[b + 1])], "n": int(sel.sum()),
                      "mean_suitability": conf, "diagnostic_fraction": acc})  # fmt: skip
    return {"ece": float(ece), "brier": float(np.mean((p - diagnostic) ** 2)), "bins": table}


def predict_split(
    model: Any,
    split: Split,
    batch_size: int = 4,
    threshold: float | NDArray[Any] = 0.5,
    grid: NDArray[Any] | None = None,
    working: int | None = None,
    stack: PresenceStack | None = None,
    modes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run ``model`` on every slice of ``split`` at full size; per-slice counts and scores.

    ``split`` holds the slices on their original grid. ``working``: the model's working size
    (:func:`ml.model.network.working_size`): slices are resampled there and the mask
    probabilities back to the original grid before thresholding, so IoU is always counted on the
    original pixels against the original ground truth.

    ``threshold``: one value or float ``(K,)`` per type. Returns ``intersection``/``union``
    int64 ``(N, K)``, ``present`` bool ``(N, K)`` (ground truth has the type), ``presence``
    float32 ``(N, K)``, ``suitability`` float32 ``(N,)``; with ``grid`` (T thresholds) also
    ``grid_intersection``/``grid_union`` int64 ``(M, T, K)`` summed over slices, for each of the
    M mask modes of :data:`gpu_ops.scoring.MASK_MODES` (pixel, gated by presence, presence over
    the whole slice, presence on the standing-out line, presence on where the air's noise level
    passes the rule, presence on the head) applied to the model's ``masks`` output.

    Also ``kspace`` float32 ``(N, 2)``: :func:`gpu_ops.scoring.kspace_features` of each slice on
    its own grid. ``stack``: the sidecar's :class:`gpu_ops.scoring.PresenceStack`, which
    re-estimates ``presence`` from the network's and those (the grid's gated and image modes
    use the stacked presence). ``modes``: a model that serves its per-pixel probabilities
    (its mask modes stripped, as a stack needs) is served with these modes here, on the
    stacked presence, before thresholding — what the scoring pipeline does.
    """
    thresholds = np.broadcast_to(np.asarray(threshold, np.float32), (len(ARTIFACT_TYPES),))
    n, k = len(split), len(ARTIFACT_TYPES)
    out = {
        "intersection": np.zeros((n, k), np.int64),
        "union": np.zeros((n, k), np.int64),
        "present": np.zeros((n, k), bool),
        "presence": np.zeros((n, k), np.float32),
        "suitability": np.zeros(n, np.float32),
        "kspace": np.zeros((n, 2), np.float32),
    }
    if grid is not None:
        out["grid_intersection"] = np.zeros((len(MASK_MODES), len(grid), k), np.int64)
        out["grid_union"] = np.zeros((len(MASK_MODES), len(grid), k), np.int64)
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, image in enumerate(split.images):
        by_shape[image.shape].append(i)
    for (rows, cols), indices in by_shape.items():
        for start in range(0, len(indices), batch_size):
            idx = indices[start : start + batch_size]
            images = to_model_grid(np.stack([split.images[i] for i in idx]), working)
            result = model.predict_on_batch(
                {"image": images[..., None], "header": split.headers[idx]}
            )
            presence = np.asarray(result["presence"], np.float32)
            kspace = kspace_features(np.stack([split.images[i] for i in idx]))
            out["kspace"][idx] = kspace
            if stack:
                presence = stack.apply(presence, kspace)
            masks = np.asarray(result["masks"], np.float32)
            if modes is not None:  # a model that serves per-pixel probabilities
                served = apply_mask_modes(np.moveaxis(masks, -1, 1), presence, modes, images)
                masks = np.moveaxis(served, 1, -1)
            probs = from_model_grid(masks, rows, cols, working)
            if grid is not None:  # the image modes' maps, on the original grid like the masks
                maps = np.stack([IMAGE_MAPS[m](images) for m in IMAGE_MAPS], axis=-1)
                maps = from_model_grid(maps, rows, cols, working)
            pred = probs >= thresholds
            for j, i in enumerate(idx):
                truth = np.moveaxis(split.masks[i].astype(bool), 0, -1)
                if grid is not None:
                    _grid_counts(out, probs[j], presence[j], maps[j], truth, grid)
                out["intersection"][i] = (pred[j] & truth).sum(axis=(0, 1))
                out["union"][i] = (pred[j] | truth).sum(axis=(0, 1))
                out["present"][i] = truth.any(axis=(0, 1))
            out["presence"][idx] = presence
            out["suitability"][idx] = np.asarray(result["suitability"])[:, 0]
    return out


def _grid_counts(
    out: dict[str, Any],
    probs: NDArray[Any],
    presence: NDArray[Any],
    maps: NDArray[Any],
    truth: NDArray[np.bool_],
    grid: NDArray[Any],
) -> None:
    """Add one slice's intersections and unions per (mode, threshold, type) to ``out``, in the
    order of :data:`MASK_MODES`; ``maps`` ``(H, W, len(IMAGE_MAPS))`` are the slice's maps of
    the image modes (line, level, head), in the order of :data:`gpu_ops.scoring.IMAGE_MAPS`."""
    truth_px = truth.sum(axis=(0, 1))
    variants = [(0, probs), (1, probs * presence)] + [
        (MASK_MODES.index(mode), maps[:, :, i, None] * presence)
        for i, mode in enumerate(IMAGE_MAPS)
    ]
    for t, value in enumerate(grid):
        for m, variant in variants:
            above = variant >= value
            out["grid_intersection"][m, t] += (above & truth).sum(axis=(0, 1))
            out["grid_union"][m, t] += (above | truth).sum(axis=(0, 1))
        # "whole": the presence over the whole slice, so the counts need no pixel loop.
        on = presence >= value
        out["grid_intersection"][2, t] += np.where(on, truth_px, 0)
        out["grid_union"][2, t] += np.where(on, truth.shape[0] * truth.shape[1], truth_px)


def report(split: Split, predictions: dict[str, Any]) -> dict[str, Any]:
    """The JSON report (see the module docstring) from :func:`predict_split`'s output."""
    nondiag = split.nondiagnostic
    summary = iou_summary(predictions["intersection"], predictions["union"], predictions["present"])
    result: dict[str, Any] = {
        "slices": len(split),
        "nondiagnostic_slices": int(nondiag.sum()),
        **summary,
        "suitability_roc_auc": roc_auc(nondiag, _unsuitability(predictions["suitability"])),
        "calibration": calibration(~nondiag, predictions["suitability"]),
        "presence_roc_auc": {
            name: roc_auc(predictions["present"][:, k], predictions["presence"][:, k])
            for k, name in enumerate(ARTIFACT_TYPES)
        },
        "by": {},
    }
    for key in ("source", "sequence", "field", "matrix"):
        groups: dict[str, list[int]] = defaultdict(list)
        for i, meta in enumerate(split.meta):
            groups[meta[key]].append(i)
        result["by"][key] = {
            value: {
                "slices": len(idx),
                "frequency_weighted_iou": iou_summary(
                    predictions["intersection"][idx],
                    predictions["union"][idx],
                    predictions["present"][idx],
                )["frequency_weighted_iou"],
                "suitability_roc_auc": roc_auc(
                    nondiag[idx], _unsuitability(predictions["suitability"][idx])
                ),
            }
            for value, idx in sorted(groups.items())
        }
    return result


def plot(split: Split, predictions: dict[str, Any], result: dict[str, Any], out: Path) -> None:
    """``roc.png`` (suitability ROC) and ``iou.png`` (per-type IoU bars) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr = roc_curve(split.nondiagnostic, _unsuitability(predictions["suitability"]))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    auc = result["suitability_roc_auc"]
    ax.plot(fpr, tpr, label=f"AUC {auc:.3f}" if auc is not None else "one class only")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate (non-diagnostic found)")
    ax.set_title("suitability ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    values = [result["iou"][n] or 0.0 for n in ARTIFACT_TYPES]
    ax.bar(range(len(values)), values)
    ax.set_xticks(range(len(values)), ARTIFACT_TYPES, rotation=40, ha="right")
    ax.set_ylim(0, 1)
    fw = result["frequency_weighted_iou"]
    ax.set_title(f"IoU per type (frequency-weighted {fw:.3f})" if fw is not None else "IoU")
    fig.tight_layout()
    fig.savefig(out / "iou.png", dpi=100)
    plt.close(fig)


THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)
MODE_MIN_GAIN = 0.02
"""Validation IoU a gated or whole-slice mask must gain over the per-pixel one to be chosen."""


def thresholds_path(model_path: Path) -> Path:
    """The sidecar file of per-type mask thresholds: ``MODEL.thresholds.json``."""
    return model_path.with_name(model_path.name.rsplit(".", 1)[0] + ".thresholds.json")


def read_thresholds(model_path: Path) -> NDArray[np.float32]:
    """float32 ``(K,)``: the model's tuned thresholds, or 0.5 each when it has no sidecar."""
    path = thresholds_path(model_path)
    if not path.is_file():
        return np.full(len(ARTIFACT_TYPES), 0.5, np.float32)
    values = json.loads(path.read_text())["thresholds"]
    return np.array([float(values[name]) for name in ARTIFACT_TYPES], np.float32)


def fit_platt(diagnostic: NDArray[Any], suitability: NDArray[Any]) -> tuple[float, float]:
    """Platt scaling ``(a, b)``: the ``sigmoid(a · logit(p) + b)`` of least log loss against the
    labels (Newton's method on the two parameters; ``a`` kept positive so the ranking holds)."""
    y = np.asarray(diagnostic, np.float64)
    p = np.clip(np.asarray(suitability, np.float64), 1e-6, 1 - 1e-6)
    z = np.log(p) - np.log1p(-p)
    if y.min() == y.max():
        return 1.0, 0.0  # one class only: nothing to fit
    a, b = 1.0, 0.0
    for _ in range(100):
        q = 1.0 / (1.0 + np.exp(-(a * z + b)))
        gradient = np.array([np.sum((q - y) * z), np.sum(q - y)])
        w = q * (1 - q) + 1e-9
        hessian = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]])
        step = np.linalg.solve(hessian + 1e-6 * np.eye(2), gradient)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return max(float(a), 1e-3), float(b)


STACK_MIN_GAIN = 0.03
"""Validation presence ROC AUC a type's :class:`gpu_ops.scoring.PresenceStack` must gain over
the network's presence alone to be kept."""
STACK_MIN_POSITIVES = 5
"""Slices with the type (and without) a validation split needs before a stack is fitted."""
STACK_TYPES = ("gibbs",)
"""The types a presence stack may be fitted for: those whose artifact the k-space measurement
describes (a zero-filled acquisition, :func:`gpu_ops.scoring.kspace_features`). Round 10's
first fits on every type also kept chemical shift and, for the pruned model, zipper (val AUC
+0.04-0.14 from a measurement that has nothing to do with either), and the pruned model's
zipper lost 0.166 -> 0.020 on the test brains."""
STACK_L2 = 1.0
"""Ridge penalty of the stack's logistic regression (on standardised inputs)."""


def fit_logistic(x: NDArray[Any], y: NDArray[Any], l2: float = STACK_L2) -> NDArray[np.float64]:
    """Weights ``(F + 1,)`` (bias last) of the ridge-penalised logistic regression of ``y`` on
    ``x`` ``(N, F)`` (standardise ``x`` first): Newton's method, the bias not penalised."""
    a = np.column_stack([np.asarray(x, np.float64), np.ones(len(x))])
    y = np.asarray(y, np.float64)
    penalty = l2 * np.diag(np.r_[np.ones(a.shape[1] - 1), 0.0])
    w = np.zeros(a.shape[1])
    for _ in range(100):
        q = 1.0 / (1.0 + np.exp(-(a @ w)))
        gradient = a.T @ (q - y) + penalty @ w
        hessian = a.T @ (a * (q * (1 - q) + 1e-9)[:, None]) + penalty
        step = np.linalg.solve(hessian + 1e-9 * np.eye(len(w)), gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def fit_presence_stack(
    present: NDArray[Any], presence: NDArray[Any], kspace: NDArray[Any]
) -> tuple[PresenceStack | None, dict[str, dict[str, float | None]]]:
    """Per type of :data:`STACK_TYPES`, a logistic regression of "the slice has the type" on
    the network's presence logit and :func:`gpu_ops.scoring.kspace_features` (``present`` bool
    ``(N, K)``, ``presence`` ``(N, K)``, ``kspace`` ``(N, 2)`` of one split), kept where it
    ranks the split better than the network alone by :data:`STACK_MIN_GAIN` of ROC AUC.
    Returns the stack (None when no type is kept) and, per type, both AUCs (the stacked one
    None where none was fitted) and whether it was kept."""
    p = np.clip(np.asarray(presence, np.float64), PRESENCE_CLIP, 1 - PRESENCE_CLIP)
    logits = np.log(p) - np.log1p(-p)
    kept: list[tuple[int, NDArray[Any], NDArray[Any], NDArray[Any]]] = []
    summary: dict[str, dict[str, float | None]] = {}
    for k, name in enumerate(ARTIFACT_TYPES):
        y = np.asarray(present[:, k], bool)
        before = roc_auc(y, presence[:, k])
        if name not in STACK_TYPES or min(y.sum(), (~y).sum()) < STACK_MIN_POSITIVES:
            summary[name] = {"auc_network": before, "auc_stacked": None, "kept": 0.0}
            continue
        x = np.column_stack([logits[:, k], stack_inputs(np.asarray(kspace, np.float64))])
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 1e-6, scale, 1.0)
        w = fit_logistic((x - mean) / scale, y)
        after = roc_auc(y, ((x - mean) / scale) @ w[:-1] + w[-1])
        keep = before is not None and after is not None and after >= before + STACK_MIN_GAIN
        summary[name] = {"auc_network": before, "auc_stacked": after, "kept": float(keep)}
        if keep:
            kept.append((k, mean, scale, w))
    if not kept:
        return None, summary
    stack = PresenceStack(
        [k for k, *_ in kept],
        [m for _, m, _, _ in kept],
        [s for _, _, s, _ in kept],
        [w[:-1] for *_, w in kept],
        [w[-1] for *_, w in kept],
    )
    return stack, summary


def read_presence_stack(model_path: Path) -> PresenceStack | None:
    """The :class:`gpu_ops.scoring.PresenceStack` of ``model_path``'s sidecar, or None."""
    path = thresholds_path(model_path)
    if not path.is_file():
        return None
    content = json.loads(path.read_text()).get("presence_stack")
    return PresenceStack.from_json(content, ARTIFACT_TYPES)


def choose_modes(iou: NDArray[Any]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Each type's mask mode and threshold from its IoU ``(modes, thresholds, types)`` over
    :data:`gpu_ops.scoring.MASK_MODES` and :data:`THRESHOLD_GRID`: the flat index
    ``mode * thresholds + threshold`` of the choice and its IoU, ``(types,)`` each.

    Ties go to the earlier entry: pixel before gated before whole before line before level, low
    threshold first. A type leaves the per-pixel mask only for a real gain
    (:data:`MODE_MIN_GAIN`), so a localised type whose masks are not learned is not painted over
    the whole slice for a few pixels' worth of IoU."""
    flat = iou.reshape(-1, iou.shape[-1])
    best = flat.argmax(axis=0)
    keep_pixel = flat.max(axis=0) < iou[0].max(axis=0) + MODE_MIN_GAIN
    best = np.where(keep_pixel, iou[0].argmax(axis=0), best)
    return best, flat[best, np.arange(flat.shape[1])]


def tuned_batch_iou(model: Any, batches: list[tuple[dict[str, Any], dict[str, Any]]]) -> float:
    """The frequency-weighted IoU that tuning (:func:`tune_thresholds`: each type's mode and
    threshold chosen on these same slices) reaches on training-style ``(x, y)`` batches, counted
    on the grid the model sees (the working grid, or crops), a mask pixel being the artifact's
    where its target (an area fraction on the working grid) is at least one half.

    The training loop keeps the epoch where this is highest: what a model is chosen by in the
    end (``ml evaluate --tune`` on the validation split), where the validation loss is led by
    the Dice of types the model has not learnt yet and picked other epochs."""
    k = len(ARTIFACT_TYPES)
    out = {
        "grid_intersection": np.zeros((len(MASK_MODES), len(THRESHOLD_GRID), k), np.int64),
        "grid_union": np.zeros((len(MASK_MODES), len(THRESHOLD_GRID), k), np.int64),
    }
    present = np.zeros(k, np.int64)
    for x, y in batches:
        result = model.predict_on_batch(x)
        probs, presence = np.asarray(result["masks"]), np.asarray(result["presence"])
        images = np.asarray(x["image"])[..., 0]
        maps = np.stack([IMAGE_MAPS[m](images) for m in IMAGE_MAPS], axis=-1)
        truth = np.asarray(y["masks"]) >= 0.5
        for j in range(len(probs)):
            _grid_counts(out, probs[j], presence[j], maps[j], truth[j], THRESHOLD_GRID)
        present += truth.any(axis=(1, 2)).sum(axis=0)
    _, chosen = choose_modes(out["grid_intersection"] / np.maximum(out["grid_union"], 1))
    return float((chosen * present).sum() / present.sum()) if present.sum() else 0.0


def tune_thresholds(
    model_path: Path,
    data_dir: Path,
    split_name: str = "val",
    modes: bool = True,
    calibrate: bool = True,
    stack: bool = True,
) -> dict[str, Any]:
    """Pick each type's mask mode and threshold maximising its dataset-level IoU on ``split_name``.

    Writes and returns the sidecar (:func:`thresholds_path`) that the pipeline and
    :func:`evaluate` read. With ``modes``, each type also gets the best of
    :data:`gpu_ops.scoring.MASK_MODES` and the model file is saved again with those modes in
    its graph (:class:`ml.model.network.MaskMode`), so every runtime serves the same masks;
    without, every type stays ``pixel``. With ``calibrate``, suitability is also Platt-scaled
    (:func:`fit_platt`, :class:`ml.model.network.SuitabilityCalibration` in the saved graph:
    the ranking and so the ROC AUC are unchanged, the probabilities match the split's
    frequencies). With ``stack``, each type's presence may be re-estimated together with the
    slice's k-space (:func:`fit_presence_stack`, fitted on the same split in a first pass)
    before the modes and thresholds are chosen on it; the sidecar then holds the stack
    (``presence_stack``), which the pipeline and :func:`evaluate` apply. Tuned on the
    validation split, never on the test split.
    """
    from ml.model import network

    model = network.with_calibration(network.with_mask_modes(network.load(model_path), None), None)
    split = load_split(data_dir, split_name)
    if split.working is not None:
        raise ValueError("tune on the original grid (a split loaded without a working size)")
    working = network.working_size(model)
    presence_stack, stack_summary = None, None
    if stack:
        first = predict_split(model, split, working=working)
        presence_stack, stack_summary = fit_presence_stack(
            first["present"], first["presence"], first["kspace"]
        )
    predictions = predict_split(
        model, split, grid=THRESHOLD_GRID, working=working, stack=presence_stack
    )
    inter, union = predictions["grid_intersection"], predictions["grid_union"]
    iou = inter / np.maximum(union, 1)  # (modes, thresholds, types)
    if not modes:
        iou = iou[:1]
    flat = iou.reshape(-1, iou.shape[-1])
    best, _ = choose_modes(iou)
    best_mode, best_t = np.divmod(best, len(THRESHOLD_GRID))
    chosen = [MASK_MODES[int(m)] for m in best_mode]
    sidecar: dict[str, Any] = {
        "tuned_on": f"{data_dir} ({split_name} split, {len(split)} slices)",
        "thresholds": {n: float(THRESHOLD_GRID[best_t[k]]) for k, n in enumerate(ARTIFACT_TYPES)},
        "modes": dict(zip(ARTIFACT_TYPES, chosen, strict=True)),
        "iou_at_threshold": {n: float(flat[best[k], k]) for k, n in enumerate(ARTIFACT_TYPES)},
        "iou_pixel_mode": {n: float(iou[0, :, k].max()) for k, n in enumerate(ARTIFACT_TYPES)},
    }
    if working is not None:
        sidecar["working_size"] = working
    if presence_stack:
        sidecar["presence_stack"] = presence_stack.to_json(ARTIFACT_TYPES)
    if stack_summary is not None:
        sidecar["presence_stack_roc_auc"] = stack_summary
    served = network.with_mask_modes(model, chosen)
    if calibrate:
        a, b = fit_platt(~split.nondiagnostic, predictions["suitability"])
        sidecar["suitability_platt"] = {"a": a, "b": b}
        served = network.with_calibration(served, (a, b))
    served.save(str(model_path))
    thresholds_path(model_path).write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def evaluate(
    model_path: Path, data_dir: Path, out: Path, split_name: str = "test"
) -> dict[str, Any]:
    """Evaluate a saved model on a split; writes ``report.json``, ``roc.png``, ``iou.png``."""
    from ml.model import network

    model = network.load(model_path)
    split = load_split(data_dir, split_name)
    if not len(split):
        raise ValueError(f"{data_dir} has no {split_name} slices")
    thresholds = read_thresholds(model_path)
    working = network.working_size(model)
    modes = network.mask_modes(model)
    stack = read_presence_stack(model_path)
    if stack:  # served as the pipeline serves it: the modes applied on the stacked presence
        predictions = predict_split(
            network.with_mask_modes(model, None),
            split,
            threshold=thresholds,
            working=working,
            stack=stack,
            modes=modes,
        )
    else:
        predictions = predict_split(model, split, threshold=thresholds, working=working)
    result = {
        "model": str(model_path),
        "working_size": working,
        "thresholds": {n: round(float(thresholds[k]), 4) for k, n in enumerate(ARTIFACT_TYPES)},
        "modes": dict(zip(ARTIFACT_TYPES, modes, strict=True)),
        "presence_stack": [ARTIFACT_TYPES[k] for k in stack.types] if stack else [],
        "parameters": int(model.count_params()),
        "data": str(data_dir),
        "split": split_name,
        **report(split, predictions),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(split, predictions, result, out)
    return result
