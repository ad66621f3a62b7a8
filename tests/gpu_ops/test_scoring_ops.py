"""The scoring pipeline's pre/post-processing kernels equal their NumPy definitions in
``ml.model.preprocess`` and the pipeline's thresholding, on NumPy and (where present) CuPy."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_ops import array_module, to_numpy
from gpu_ops.scoring import canonical_batch, normalise_batch, pad_batch, threshold_masks
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
