"""Agreement statistics against values computed by hand (worked out in the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from annotation import agreement
from annotation.rle import MaskFormatError, rle_decode, rle_encode


def test_iou_and_dice_of_two_small_masks():
    a = np.array([[1, 1, 0], [0, 1, 0]])
    b = np.array([[1, 0, 0], [0, 1, 1]])
    # a inter b = 2 pixels, a union b = 4 pixels, |a| = |b| = 3
    assert agreement.iou(a, b) == pytest.approx(2 / 4)
    assert agreement.dice(a, b) == pytest.approx(2 * 2 / 6)
    assert agreement.iou(np.zeros((2, 2)), np.zeros((2, 2))) is None
    assert agreement.masks_disagree(a, b, 0.6) and not agreement.masks_disagree(a, b, 0.5)


def test_cohen_kappa_of_a_two_by_two_table():
    # 10 items: both yes 4, both no 3, x yes / y no 2, x no / y yes 1.
    x = ["y"] * 4 + ["n"] * 3 + ["y"] * 2 + ["n"] * 1
    y = ["y"] * 4 + ["n"] * 3 + ["n"] * 2 + ["y"] * 1
    # p_o = 7/10; x: 6 yes, 4 no; y: 5 yes, 5 no; p_e = (6*5 + 4*5)/100 = 0.5
    assert agreement.cohen_kappa(x, y) == pytest.approx((0.7 - 0.5) / 0.5)


def test_cohen_kappa_is_undefined_when_both_raters_never_vary():
    assert agreement.cohen_kappa([True, True], [True, True]) is None
    assert agreement.cohen_kappa([], []) is None


def test_fleiss_kappa_of_a_small_table():
    # 4 items, 3 raters, 2 categories.
    table = [[3, 0], [0, 3], [2, 1], [1, 2]]
    # P_i = (9-3)/6 = 1, 1, (4+1-3)/6 = 1/3, 1/3 -> P̄ = 2/3
    # p_yes = (3+0+2+1)/12 = 1/2, p_no = 1/2 -> P_e = 1/2 -> kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert agreement.fleiss_kappa(table) == pytest.approx(1 / 3)


def test_fleiss_kappa_with_perfect_agreement_is_one():
    assert agreement.fleiss_kappa([[2, 0], [0, 2], [2, 0]]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        agreement.fleiss_kappa([[2, 0], [1, 2]])


def test_category_table_counts_ratings_per_item():
    table, categories = agreement.category_table([[True, False], [True, True]])
    assert categories == [False, True]
    assert table.tolist() == [[1, 1], [0, 2]]


def test_majority_vote_keeps_pixels_most_readers_marked():
    a = np.array([[1, 1, 0, 0]])
    b = np.array([[1, 0, 1, 0]])
    c = np.array([[1, 1, 0, 1]])
    assert agreement.majority_vote([a, b, c]).tolist() == [[1, 1, 0, 0]]
    assert agreement.majority_vote([a, b]).tolist() == [[1, 0, 0, 0]]


def test_staple_trusts_the_readers_who_agree_with_the_others():
    truth = np.zeros((20, 20), np.uint8)
    truth[5:15, 5:15] = 1
    good1, good2 = truth.copy(), truth.copy()
    good2[5, 5] = 0
    bad = np.zeros_like(truth)
    bad[0:4, 0:20] = 1  # marks the wrong place entirely
    estimate, sensitivity, specificity = agreement.staple([good1, good2, bad])
    assert agreement.iou(estimate, truth) > 0.95
    assert sensitivity[2] < 0.1 < sensitivity[0]
    assert specificity[0] > specificity[2]


def test_masks_travel_as_run_lengths():
    mask = np.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], np.uint8)
    assert rle_encode(mask) == [3, 2, 5]
    assert rle_encode(np.ones((1, 3))) == [0, 3]
    assert rle_decode([3, 2, 5], (2, 5)).tolist() == mask.tolist()
    with pytest.raises(MaskFormatError):
        rle_decode([3, 2], (2, 5))
