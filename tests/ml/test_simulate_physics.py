"""The ten artifact simulators follow their physics on a synthetic head phantom."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from gpu_ops import to_numpy
from ml import ARTIFACT_TYPES
from ml.simulate import (
    SIMULATORS,
    AcquisitionHeader,
    chemical_shift_pixels,
    gibbs,
    noise,
    simulate,
    zipper,
)
from ml.simulate._common import head_and_reference
from tests.gpu_ops.phantoms import BACKEND_PARAMS, backend, head_phantom

N = 128


def _header(pe="ROW", **kw):
    return AcquisitionHeader(rows=N, columns=N, phase_encode=pe, **kw)


@pytest.fixture(scope="module")
def phantom():
    return head_phantom(N)


@pytest.mark.parametrize("name", BACKEND_PARAMS)
@pytest.mark.parametrize("artifact", ARTIFACT_TYPES)
def test_severity_zero_returns_the_clean_image_exactly(phantom, artifact, name):
    xp = backend(name)
    image = xp.asarray(phantom[0])
    out = simulate(image, artifact, 0.0, _header(), seed=3)
    assert type(out) is type(image) and out.dtype == np.float32
    assert to_numpy(out).tobytes() == phantom[0].tobytes()


@pytest.mark.parametrize("artifact", ARTIFACT_TYPES)
def test_every_kernel_at_zero_strength_leaves_the_image_unchanged(phantom, artifact):
    # The kernels themselves, not the severity-0 shortcut of simulate().
    batch = phantom[0][None]
    out = SIMULATORS[artifact](batch, 0.0, _header(), np.random.default_rng(0), {})
    np.testing.assert_allclose(out, batch, atol=2e-5)


@pytest.mark.parametrize("artifact", ARTIFACT_TYPES)
def test_the_same_seed_gives_the_same_bytes_and_the_image_changes(phantom, artifact):
    a = simulate(phantom[0], artifact, 0.7, _header(), seed=11)
    b = simulate(phantom[0], artifact, 0.7, _header(), seed=11)
    assert a.tobytes() == b.tobytes()
    assert np.abs(a - phantom[0]).max() > 0.05


@pytest.mark.parametrize("artifact", ARTIFACT_TYPES)
def test_a_higher_severity_changes_the_image_more(phantom, artifact):
    mild = simulate(phantom[0], artifact, 0.3, _header(), seed=6)
    strong = simulate(phantom[0], artifact, 0.9, _header(), seed=6)
    assert np.abs(strong - phantom[0]).sum() > 1.2 * np.abs(mild - phantom[0]).sum()


@pytest.mark.parametrize(
    "artifact", ["motion", "ghosting", "spike", "zipper", "noise", "bias_field"]
)
def test_another_seed_gives_another_image(phantom, artifact):
    a = simulate(phantom[0], artifact, 0.7, _header(), seed=1)
    b = simulate(phantom[0], artifact, 0.7, _header(), seed=2)
    assert a.tobytes() != b.tobytes()


def test_a_batch_keeps_its_shape_and_gives_every_slice_its_own_draw(phantom):
    batch = np.stack([phantom[0]] * 3)
    out = simulate(batch, "motion", 0.8, _header(), seed=5)
    assert out.shape == batch.shape and out.dtype == np.float32
    assert out[0].tobytes() != out[1].tobytes()


def _energy_beside_head(clean, artifacted, pe_axis):
    """|A - C|^2 outside the (dilated) head, split by whether the pixel's phase-encode line
    crosses the head (replicas along phase-encode land there) or not (beyond the head along
    frequency-encode, where phase-encode replicas never go)."""
    head = ndi.binary_dilation(clean > 0.05, iterations=2)
    diff = (artifacted - clean) ** 2 * ~head
    crosses = head.any(axis=pe_axis, keepdims=True)
    return float((diff * crosses).sum()), float((diff * ~crosses).sum())


@pytest.mark.parametrize("artifact", ["motion", "ghosting"])
@pytest.mark.parametrize("pe", ["ROW", "COL"])
def test_replicas_lie_beside_the_head_along_phase_encode_and_follow_its_direction(
    phantom, artifact, pe
):
    header = _header(pe)
    pe_axis = header.phase_axis
    totals = np.zeros(2)
    for seed in range(3):
        out = simulate(phantom[0], artifact, 0.8, header, seed=seed)
        totals += _energy_beside_head(phantom[0], out, pe_axis)
    along_pe, along_fe = totals
    assert along_pe > 0.5
    # Rotations move a little energy off-axis; the rest lies along phase-encode.
    assert along_pe > 5 * along_fe


@pytest.mark.parametrize("pe", ["ROW", "COL"])
def test_aliasing_folds_each_phase_encode_line_onto_itself(phantom, pe):
    # Folding moves signal only along phase-encode: every phase-encode line keeps its total,
    # packed into the reduced field of view, while frequency-encode lines change.
    header = _header(pe)
    out = simulate(phantom[0], "aliasing", 0.8, header, seed=0)
    pe_axis = header.phase_axis
    np.testing.assert_allclose(out.sum(axis=pe_axis), phantom[0].sum(axis=pe_axis), atol=1e-3)
    per_fe_line = np.abs(out.sum(axis=1 - pe_axis) - phantom[0].sum(axis=1 - pe_axis))
    assert per_fe_line.max() > 5.0
    outside = np.flatnonzero(out.sum(axis=1 - pe_axis) == 0)
    head_lines = np.flatnonzero(phantom[0].sum(axis=1 - pe_axis) > 0)
    # The lines beyond the reduced field of view hold no signal although anatomy was there.
    assert np.intersect1d(outside, head_lines).size > 10


@pytest.mark.parametrize("pe", ["ROW", "COL"])
@pytest.mark.parametrize("bandwidth", [100.0, 400.0])
def test_the_zipper_is_a_line_along_phase_encode_at_f0_over_the_bandwidth(phantom, pe, bandwidth):
    header = _header(pe, pixel_bandwidth_hz=bandwidth)
    seed = 21
    out = simulate(phantom[0], "zipper", 0.8, header, seed=seed)
    f0 = zipper.draw_frequency_hz(np.random.default_rng(seed), header)
    expected = zipper_pos = zipper.zipper_position(header, f0)
    assert zipper_pos == N // 2 + f0 / bandwidth
    diff = np.abs(out - phantom[0])
    profile = diff.mean(axis=header.phase_axis)  # one value per frequency-encode position
    assert abs(int(np.argmax(profile)) - expected) <= 1.0
    line = np.take(diff, round(expected) % N, axis=header.frequency_axis)
    assert (line > 0.01).mean() > 0.7  # it spans the whole phase-encode length
    others = np.delete(
        profile,
        [round(expected) % N + d for d in (-2, -1, 0, 1, 2) if 0 <= round(expected) + d < N],
    )
    assert profile.max() > 10 * others.max()


def test_the_chemical_shift_formula_gives_the_known_values():
    assert chemical_shift_pixels(_header(field_strength_t=3.0, pixel_bandwidth_hz=130.0)) == (
        pytest.approx(3.5e-6 * 42.577e6 * 3.0 / 130.0)
    )
    assert chemical_shift_pixels(_header(field_strength_t=3.0, pixel_bandwidth_hz=130.0)) == (
        pytest.approx(3.439, abs=1e-3)
    )
    assert chemical_shift_pixels(_header(field_strength_t=1.5, pixel_bandwidth_hz=260.0)) == (
        pytest.approx(0.860, abs=1e-3)
    )


def _centroid(image, axis):
    coords = np.arange(image.shape[axis], dtype=np.float64)
    weights = image.sum(axis=1 - axis).astype(np.float64)
    return float((coords * weights).sum() / weights.sum())


@pytest.mark.parametrize("pe", ["ROW", "COL"])
@pytest.mark.parametrize(("b0", "bandwidth"), [(3.0, 130.0), (1.5, 260.0), (3.0, 400.0)])
def test_fat_moves_along_frequency_encode_by_the_header_displacement(pe, b0, bandwidth):
    # A lone fat disc: the shifted fat is the whole image, its centroid shift is measurable.
    yy, xx = np.mgrid[:N, :N]
    disc = (((yy - 60) ** 2 + (xx - 70) ** 2) <= 15**2).astype(np.float32)
    disc = ndi.gaussian_filter(disc, 1.0).astype(np.float32)
    header = _header(pe, field_strength_t=b0, pixel_bandwidth_hz=bandwidth)
    out = simulate(disc, "chemical_shift", 1.0, header, seed=0, maps={"fat": np.ones_like(disc)})
    fe, ph = header.frequency_axis, header.phase_axis
    shift_fe = _centroid(out, fe) - _centroid(disc, fe)
    shift_pe = _centroid(out, ph) - _centroid(disc, ph)
    assert shift_fe == pytest.approx(-chemical_shift_pixels(header), abs=0.05)
    assert abs(shift_pe) < 0.01
    # Cross-correlation agrees to the nearest pixel.
    xc = np.fft.ifft2(np.fft.fft2(out) * np.conj(np.fft.fft2(disc))).real
    peak = np.unravel_index(np.argmax(xc), xc.shape)
    peak_fe = (peak[fe] + N // 2) % N - N // 2
    assert peak_fe == round(-chemical_shift_pixels(header))
    assert peak[ph] == 0


def test_only_the_fat_moves_and_water_stays(phantom):
    image, maps = phantom
    header = _header(field_strength_t=3.0, pixel_bandwidth_hz=130.0)
    out = simulate(image, "chemical_shift", 1.0, header, seed=0, maps={"fat": maps["fat"]})
    changed = ndi.binary_dilation(maps["fat"] > 0, iterations=4)
    diff = np.abs(out - image)
    # Sub-pixel Fourier shifts of the sharp fat ring ring weakly beyond it; the brain is intact.
    assert diff[~changed].sum() < 0.1 * diff[changed].sum()
    assert diff[changed].max() > 0.5


def test_gibbs_rings_at_a_sharp_edge_and_the_ringing_grows_with_truncation():
    step = np.zeros((N, N), np.float32)
    step[32:96, 32:96] = 1.0
    header = _header()
    profile = simulate(step, "gibbs", 0.8, header, seed=0)[64]
    assert profile.max() > 1.05  # overshoot (about 9 %) next to the edge
    outside = profile[:32]
    sign_changes = np.count_nonzero(np.diff(np.sign(np.diff(outside))))
    assert sign_changes >= 3  # oscillation, not a monotone blur
    mild = simulate(step, "gibbs", 0.2, header, seed=0)
    assert (
        np.abs(mild - step).sum()
        < np.abs(simulate(step, "gibbs", 0.8, header, seed=0) - step).sum()
    )
    assert gibbs.acquired_matrix(header, 0.0) == (N, N)


@pytest.mark.parametrize("severity", [0.3, 0.9])
def test_noise_raises_the_background_std_to_the_rayleigh_value_set(phantom, severity):
    image = phantom[0]
    header = _header(pixel_bandwidth_hz=200.0, field_strength_t=3.0)
    out = simulate(image, "noise", severity, header, seed=4)
    _, ref = head_and_reference(image[None])
    sigma = noise.noise_sigma(severity, float(ref[0]), header)
    background = ~ndi.binary_dilation(image > 0, iterations=3)
    measured = out[background].std()
    assert measured == pytest.approx(noise.RAYLEIGH_STD_FACTOR * sigma, rel=0.08)
    assert image[background].std() == 0.0


def test_noise_grows_with_the_square_root_of_the_bandwidth_and_falls_with_b0(phantom):
    image = phantom[0]
    background = ~ndi.binary_dilation(image > 0, iterations=3)

    def std(**kw):
        return simulate(image, "noise", 0.5, _header(**kw), seed=9)[background].std()

    assert std(pixel_bandwidth_hz=800.0) / std(pixel_bandwidth_hz=200.0) == pytest.approx(
        2, rel=0.08
    )
    assert std(field_strength_t=1.5) / std(field_strength_t=3.0) == pytest.approx(2, rel=0.08)


@pytest.mark.parametrize("pe", ["ROW", "COL"])
def test_susceptibility_distorts_along_frequency_encode_only(phantom, pe):
    image, maps = phantom
    header = _header(pe, te_ms=0.001, pixel_bandwidth_hz=200.0)
    out = simulate(image, "susceptibility", 0.3, header, seed=0, maps={"air": maps["air"]})
    fe = header.frequency_axis
    # Displacement along frequency-encode with the Jacobian conserves each line's integral.
    np.testing.assert_allclose(out.sum(axis=fe), image.sum(axis=fe), rtol=0.03, atol=0.3)
    assert np.abs(out - image).max() > 0.1
    assert np.abs(out.sum(axis=1 - fe) - image.sum(axis=1 - fe)).max() > 0.5


def test_susceptibility_distortion_shrinks_with_bandwidth_and_voids_grow_with_te(phantom):
    image, maps = phantom

    def change(**kw):
        out = simulate(
            image, "susceptibility", 1.0, _header(**kw), seed=0, maps={"air": maps["air"]}
        )
        return float(np.abs(out - image).sum())

    assert change(te_ms=0.001, pixel_bandwidth_hz=400.0) < 0.5 * change(
        te_ms=0.001, pixel_bandwidth_hz=100.0
    )
    near = ndi.binary_dilation(maps["air"] > 0, iterations=4) & ~(maps["air"] > 0)
    short = simulate(
        image, "susceptibility", 1.0, _header(te_ms=2.0), seed=0, maps={"air": maps["air"]}
    )
    long = simulate(
        image, "susceptibility", 1.0, _header(te_ms=30.0), seed=0, maps={"air": maps["air"]}
    )
    assert long[near].mean() < 0.8 * short[near].mean()


def test_susceptibility_finds_the_air_cavity_without_maps(phantom):
    image, maps = phantom
    out = simulate(image, "susceptibility", 1.0, _header(te_ms=30.0), seed=0)
    diff = np.abs(out - image)
    near = ndi.binary_dilation(maps["air"] > 0, iterations=10)
    assert diff[near].mean() > 5 * diff[~near].mean()


def test_a_spike_stripes_the_whole_image_background_included(phantom):
    image = phantom[0]
    out = simulate(image, "spike", 1.0, _header(), seed=2)
    background = image == 0
    assert (out[background] > 0.05).mean() > 0.5
    # Stripes: inside the head the plane wave adds and subtracts in alternating bands.
    change = (out - image)[image > 0.5]
    assert (change > 0.02).mean() > 0.2 and (change < -0.02).mean() > 0.2


def test_the_bias_field_is_smooth_and_multiplicative(phantom):
    image = phantom[0]
    out = simulate(image, "bias_field", 1.0, _header(), seed=3)
    inside = image > 0.5
    gain = out[inside] / image[inside]
    assert gain.max() / gain.min() > 1.2
    assert (out[image == 0] == 0).all()
    ratio = np.where(image > 0, out / np.where(image > 0, image, 1), np.nan)
    step = np.nanmax(np.abs(np.diff(ratio, axis=1)))
    assert step < 0.05  # varies over the field of view, not pixel to pixel


def test_simulate_rejects_bad_arguments(phantom):
    with pytest.raises(ValueError, match="unknown artifact"):
        simulate(phantom[0], "blur", 0.5, _header(), seed=0)
    with pytest.raises(ValueError, match="severity"):
        simulate(phantom[0], "noise", 1.5, _header(), seed=0)
    with pytest.raises(ValueError, match="header says"):
        simulate(phantom[0][:64], "noise", 0.5, _header(), seed=0)


@pytest.mark.parametrize("name", BACKEND_PARAMS)
@pytest.mark.parametrize("artifact", ARTIFACT_TYPES)
def test_cupy_and_numpy_agree(phantom, artifact, name):
    xp = backend(name)
    batch = np.stack([phantom[0]] * 2)
    out = simulate(xp.asarray(batch), artifact, 0.6, _header(), seed=8)
    ref = simulate(batch, artifact, 0.6, _header(), seed=8)
    np.testing.assert_allclose(to_numpy(out), ref, atol=2e-3)


def _n_half_seed(header):
    from ml.simulate import ghosting

    for seed in range(100):
        w = ghosting.line_weights(N, 0.8, header, np.random.default_rng(seed))
        if np.allclose(w[::2], 1.0):
            return seed
    raise AssertionError("no N/2 draw in 100 seeds")


@pytest.mark.parametrize("pe", ["ROW", "COL"])
def test_n_half_ghosting_puts_the_replica_half_a_field_of_view_away(phantom, pe):
    from ml.simulate import ghosting

    header = _header(pe)
    seed = _n_half_seed(header)
    batch = phantom[0][None]
    out = ghosting.apply(batch, 0.8, header, np.random.default_rng(seed), {})[0]
    # Alternate-line modulation = (1 + m)/2 * object + (1 - m)/2 * object shifted by N/2: the
    # difference from the clean image is spanned by the clean and the half-FOV-shifted copy.
    shifted = np.roll(phantom[0], N // 2, axis=header.phase_axis)
    background = phantom[0] == 0
    ghost = out[background]
    assert np.corrcoef(ghost, shifted[background])[0, 1] > 0.95
    assert ghost.max() > 0.1
