"""gpu_ops kernels agree with their NumPy/SciPy definitions, on NumPy and (where present) CuPy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from gpu_ops import OptionalImportError, array_module, optional_import, to_numpy
from gpu_ops.kspace import fft2c, fourier_shift, ifft2c, modulate_lines
from gpu_ops.ndimage import (
    fill_holes2d,
    gaussian_filter2d,
    largest_component2d,
    rotate2d,
    warp_along_axis,
)
from tests.gpu_ops.phantoms import BACKEND_PARAMS, backend


def _batch(xp, seed=0, shape=(3, 32, 40)):
    return xp.asarray(np.random.default_rng(seed).random(shape, dtype=np.float32))


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_the_centred_fft_round_trips_and_puts_dc_in_the_middle(name):
    xp = backend(name)
    x = _batch(xp)
    k = fft2c(x)
    assert array_module(k) is xp and k.dtype == xp.complex64
    np.testing.assert_allclose(to_numpy(ifft2c(k).real), to_numpy(x), atol=1e-5)
    dc = to_numpy(k)[:, 16, 20].real
    np.testing.assert_allclose(dc, to_numpy(x).sum(axis=(1, 2)) / np.sqrt(32 * 40), rtol=1e-5)


@pytest.mark.parametrize("name", BACKEND_PARAMS)
@pytest.mark.parametrize("axis", [-2, -1])
def test_an_integer_fourier_shift_is_a_circular_roll(name, axis):
    xp = backend(name)
    x = _batch(xp)
    shifted = to_numpy(fourier_shift(x, 3.0, axis).real)
    np.testing.assert_allclose(shifted, np.roll(to_numpy(x), 3, axis=axis), atol=1e-5)


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_alternating_line_signs_move_the_image_by_half_the_field_of_view(name):
    xp = backend(name)
    x = _batch(xp)
    signs = np.where(np.arange(40) % 2 == 0, 1.0, -1.0)
    out = to_numpy(ifft2c(modulate_lines(fft2c(x), signs, -1)).real)
    np.testing.assert_allclose(np.abs(out), np.roll(to_numpy(x), 20, axis=-1), atol=1e-5)


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_the_gaussian_filter_matches_scipy_slice_by_slice(name):
    xp = backend(name)
    x = _batch(xp)
    out = to_numpy(gaussian_filter2d(x, 1.5))
    ref = np.stack([ndi.gaussian_filter(s, 1.5) for s in to_numpy(x)])
    np.testing.assert_allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_holes_are_filled_and_only_the_largest_4_connected_component_is_kept(name):
    xp = backend(name)
    m = np.zeros((2, 12, 12), bool)
    m[0, 1:8, 1:8] = True
    m[0, 3:5, 3:5] = False  # a hole
    m[0, 9, 9] = m[0, 10, 10] = True  # diagonal neighbours: two components under 4-connectivity
    filled = to_numpy(fill_holes2d(xp.asarray(m)))
    assert filled[0, 3:5, 3:5].all() and not filled[1].any()
    largest = to_numpy(largest_component2d(xp.asarray(filled)))
    assert largest[0, 1:8, 1:8].all() and not largest[0, 9, 9] and not largest[0, 10, 10]
    assert not largest[1].any()


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_a_constant_warp_moves_content_and_fills_zeros(name):
    xp = backend(name)
    x = _batch(xp)
    out = to_numpy(warp_along_axis(x, xp.full(x.shape, 2.0, dtype=xp.float32), -2))
    np.testing.assert_allclose(out[:, 2:], to_numpy(x)[:, :-2], atol=1e-6)
    assert (out[:, :2] == 0).all()


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_a_quarter_turn_rotates_the_slice(name):
    xp = backend(name)
    x = _batch(xp, shape=(1, 33, 33))
    out = to_numpy(rotate2d(x, 90.0))
    assert np.allclose(out[0], np.rot90(to_numpy(x)[0]), atol=1e-4)


def test_a_missing_optional_module_is_reported_when_used():
    module, ok = optional_import("no_such_module_for_artiscan")
    assert not ok
    with pytest.raises(OptionalImportError, match="no_such_module_for_artiscan"):
        module.anything  # noqa: B018
