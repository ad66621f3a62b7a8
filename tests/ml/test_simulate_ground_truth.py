"""ground_truth() follows MISSION.md's convention, checked by hand and against a plain rewrite."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from gpu_ops import to_numpy
from ml.simulate import AcquisitionHeader, ground_truth, simulate
from tests.gpu_ops.phantoms import BACKEND_PARAMS, backend, head_phantom


def _disc(n=64, radius=20, value=1.0):
    yy, xx = np.mgrid[:n, :n]
    return np.where((yy - n / 2) ** 2 + (xx - n / 2) ** 2 <= radius**2, value, 0.0).astype(
        np.float32
    )


def _reference_convention(c, a):
    """MISSION.md, word for word, with SciPy on one slice."""
    p99 = np.percentile(c, 99)
    filled = ndi.binary_fill_holes(c > 0.1 * p99)
    labels, n = ndi.label(filled)  # default structure: 4-connected
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    head = labels == np.argmax(sizes) if n else np.zeros_like(filled)
    r = np.percentile(c[head], 99)
    d = ndi.gaussian_filter(np.abs(a - c), sigma=1.5)
    mask = (d > 0.05 * r).astype(np.uint8)
    nondiagnostic = (d > 0.10 * r)[head].sum() >= 0.10 * head.sum()
    return mask, bool(nondiagnostic)


def test_identical_images_give_an_empty_mask_and_a_diagnostic_slice():
    c = _disc()
    mask, nondiagnostic = ground_truth(c, c.copy())
    assert mask.dtype == np.uint8 and mask.shape == c.shape
    assert mask.sum() == 0 and not bool(nondiagnostic)


def test_a_change_in_the_background_is_masked_but_never_makes_the_slice_nondiagnostic():
    c = _disc()
    a = c.copy()
    a[2:12, 2:12] += 0.2  # outside the head, 20 % of r = 1
    mask, nondiagnostic = ground_truth(c, a)
    assert mask[4:10, 4:10].all()  # the blurred plateau stays above 0.05 r
    assert mask[40:, 40:].sum() == 0
    assert not bool(nondiagnostic)


def test_a_strong_change_over_a_tenth_of_the_head_makes_the_slice_nondiagnostic():
    c = _disc()
    head_area = int((c > 0).sum())
    rows = int(np.ceil(0.15 * head_area / 40))
    a = c.copy()
    a[26 : 26 + rows, 12:52] += 0.5 * (c[26 : 26 + rows, 12:52] > 0)
    assert bool(ground_truth(c, a)[1])
    weak = c + 0.04 * (c > 0)  # 4 % of r everywhere: below the mask threshold
    mask, nondiagnostic = ground_truth(c, weak)
    assert mask.sum() == 0 and not bool(nondiagnostic)


def test_holes_in_the_head_count_as_head():
    # A ring: its dark centre is a hole of C > 0.1 p99, so it belongs to H.
    c = _disc(radius=24) - _disc(radius=18)
    a = c + 0.5 * _disc(radius=18)  # changes only the hole: 56 % of the filled head
    assert bool(ground_truth(c, a)[1])


def test_only_the_largest_4_connected_component_is_the_head():
    c = _disc(radius=20)
    c[0:3, 0:3] = 1.0  # a bright speck outside: not the head
    a = c.copy()
    a[0:3, 0:3] = 0.0
    a[20:44, 20:44] += 0.3 * (c[20:44, 20:44] > 0)
    mask, nondiagnostic = ground_truth(c, a)
    expected_mask, expected_flag = _reference_convention(c, a)
    np.testing.assert_array_equal(mask, expected_mask)
    assert bool(nondiagnostic) == expected_flag


@pytest.mark.parametrize("artifact", ["motion", "noise", "gibbs", "zipper"])
def test_it_agrees_with_a_plain_scipy_rewrite_of_the_convention_on_a_batch(artifact):
    image, _ = head_phantom(96)
    header = AcquisitionHeader(rows=96, columns=96)
    clean = np.stack([image, 0.5 * image])
    art = simulate(clean, artifact, 0.6, header, seed=1)
    masks, flags = ground_truth(clean, art)
    assert masks.shape == clean.shape and flags.shape == (2,) and flags.dtype == bool
    for i in range(2):
        expected_mask, expected_flag = _reference_convention(clean[i], art[i])
        np.testing.assert_array_equal(masks[i], expected_mask)
        assert bool(flags[i]) == expected_flag


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_it_returns_the_array_kind_it_was_given(name):
    xp = backend(name)
    image, _ = head_phantom(64)
    art = image + 0.3 * (image > 0)
    mask, flag = ground_truth(xp.asarray(image), xp.asarray(art))
    assert type(mask) is type(xp.asarray(image))
    expected_mask, expected_flag = _reference_convention(image, art)
    np.testing.assert_array_equal(to_numpy(mask), expected_mask)
    assert bool(flag) == expected_flag is True


def test_it_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        ground_truth(_disc(), _disc(n=32))


def test_one_artifact_of_several_is_measured_against_the_clean_slices_head_and_level():
    """A bias field, then noise: the noise's own mask is its step's change (the image before it
    against the image after it) over the clean slice's r, as MISSION.md's C says, not over the
    biased image's, whose head p99 the field moved by half."""
    c = _disc(value=1.0)
    yy, _ = np.mgrid[:64, :64]
    biased = c * (1.0 + 0.8 * yy / 63)  # the head's p99 goes from 1 to ~1.7
    rng = np.random.default_rng(0)
    noisy = biased + rng.normal(0, 0.08, c.shape).astype(np.float32)
    expected, _ = _reference_convention(c, c + (noisy - biased))  # same D, the clean H and r
    mask, _ = ground_truth(biased, noisy, reference=c)
    np.testing.assert_array_equal(mask, expected)
    unreferenced, _ = ground_truth(biased, noisy)
    assert unreferenced.sum() < 0.8 * mask.sum()  # the biased r hid a good part of the noise
