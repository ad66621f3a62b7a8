"""Agreement statistics and mask fusion; NumPy only (no Django), so they are tested by hand.

Masks are uint8/bool ``(Rows, Columns)`` arrays on the instance's pixel grid, non-zero = marked.
Labels are any hashable category (``True``/``False`` for "diagnostic", a type's presence, …).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np
from numpy.typing import NDArray


def overlap(a: NDArray[np.generic], b: NDArray[np.generic]) -> tuple[int, int, int, int]:
    """(intersection, union, pixels of a, pixels of b)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return int((a & b).sum()), int((a | b).sum()), int(a.sum()), int(b.sum())


def iou(a: NDArray[np.generic], b: NDArray[np.generic]) -> float | None:
    """Intersection over union; None when both masks are empty (nothing to compare)."""
    inter, union, _, _ = overlap(a, b)
    return inter / union if union else None


def dice(a: NDArray[np.generic], b: NDArray[np.generic]) -> float | None:
    """2|a∩b| / (|a| + |b|); None when both masks are empty."""
    inter, _, na, nb = overlap(a, b)
    return 2 * inter / (na + nb) if na + nb else None


def masks_disagree(a: NDArray[np.generic], b: NDArray[np.generic], threshold: float) -> bool:
    """Two readings of one type disagree when their IoU is below ``threshold`` (two empty masks
    agree)."""
    value = iou(a, b)
    return value is not None and value < threshold


def cohen_kappa(x: Sequence[Hashable], y: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters over the same items: (p_o - p_e) / (1 - p_e), where p_o is
    the observed agreement and p_e the agreement expected from each rater's marginals.

    None with no items, or when chance agreement is certain (both raters used one and the same
    category throughout: kappa is undefined).
    """
    if len(x) != len(y):
        raise ValueError("both raters must rate the same items")
    n = len(x)
    if n == 0:
        return None
    observed = sum(1 for a, b in zip(x, y, strict=True) if a == b) / n
    cx, cy = Counter(x), Counter(y)
    expected = sum(cx[c] * cy.get(c, 0) for c in cx) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(counts: NDArray[np.integer] | Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa from an ``(items, categories)`` table of how many raters put each item in
    each category; every item must have the same number of raters n ≥ 2.

    P_i = (Σ_j n_ij² - n) / (n(n - 1)), P̄ = mean P_i, p_j = Σ_i n_ij / (N n),
    P_e = Σ_j p_j², kappa = (P̄ - P_e) / (1 - P_e). None when undefined (no items, P_e = 1).
    """
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] == 0:
        return None
    raters = table.sum(axis=1)
    n = raters[0]
    if n < 2 or not np.all(raters == n):
        raise ValueError("every item needs the same number (≥ 2) of ratings")
    per_item = (np.square(table).sum(axis=1) - n) / (n * (n - 1))
    p_bar = float(per_item.mean())
    p_j = table.sum(axis=0) / (table.shape[0] * n)
    p_e = float(np.square(p_j).sum())
    if p_e >= 1.0:
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def category_table(
    ratings: Sequence[Sequence[Hashable]],
) -> tuple[NDArray[np.int64], list[Hashable]]:
    """Per item the list of its ratings → the ``(items, categories)`` count table of
    :func:`fleiss_kappa` and the category order."""
    categories = sorted({r for item in ratings for r in item}, key=repr)
    index = {c: j for j, c in enumerate(categories)}
    table = np.zeros((len(ratings), len(categories)), np.int64)
    for i, item in enumerate(ratings):
        for r in item:
            table[i, index[r]] += 1
    return table, categories


def majority_vote(masks: Sequence[NDArray[np.generic]]) -> NDArray[np.uint8]:
    """Pixels marked by more than half of the readers (with two readers: both)."""
    stack = np.stack([np.asarray(m) > 0 for m in masks])
    return (stack.sum(axis=0) * 2 > len(masks)).astype(np.uint8)


def staple(
    masks: Sequence[NDArray[np.generic]], iterations: int = 50, tolerance: float = 1e-6
) -> tuple[NDArray[np.uint8], NDArray[np.float64], NDArray[np.float64]]:
    """Binary STAPLE (Warfield, Zou, Wells 2004): EM estimate of the true mask and of each
    reader's sensitivity p_j and specificity q_j.

    E-step: W = f·Π p_j^D_j (1-p_j)^(1-D_j) / (that + (1-f)·Π q_j^(1-D_j) (1-q_j)^D_j), with the
    prior f the mean vote; M-step: p_j = Σ W D_j / Σ W, q_j = Σ (1-W)(1-D_j) / Σ (1-W).
    Returns (W ≥ 0.5 as uint8, p, q).
    """
    decisions = np.stack([(np.asarray(m) > 0).reshape(-1) for m in masks]).astype(np.float64)
    shape = np.asarray(masks[0]).shape
    prior = float(decisions.mean())
    if prior in (0.0, 1.0):
        return (np.full(shape, int(prior), np.uint8), np.ones(len(masks)), np.ones(len(masks)))
    p = np.full(len(masks), 0.99)
    q = np.full(len(masks), 0.99)
    weights = decisions.mean(axis=0)
    for _ in range(iterations):
        log_a = np.log(prior) + (
            decisions * np.log(p)[:, None] + (1 - decisions) * np.log1p(-p)[:, None]
        ).sum(axis=0)
        log_b = np.log1p(-prior) + (
            (1 - decisions) * np.log(q)[:, None] + decisions * np.log1p(-q)[:, None]
        ).sum(axis=0)
        new = 1.0 / (1.0 + np.exp(np.clip(log_b - log_a, -700, 700)))
        p = np.clip((new * decisions).sum(axis=1) / max(new.sum(), 1e-12), 1e-6, 1 - 1e-6)
        q = np.clip(
            ((1 - new) * (1 - decisions)).sum(axis=1) / max((1 - new).sum(), 1e-12),
            1e-6,
            1 - 1e-6,
        )
        done = float(np.abs(new - weights).max()) < tolerance
        weights = new
        if done:
            break
    return (weights >= 0.5).reshape(shape).astype(np.uint8), p, q
