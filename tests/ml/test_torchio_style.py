"""The second artifact generator (TorchIO's algorithms, our code) makes what those algorithms make,
and a ``--style torchio`` data set holds the same clean slices as ours."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml import ARTIFACT_TYPES
from ml.__main__ import main
from ml.simulate import AcquisitionHeader, torchio_style


def _header(phase_encode: str = "ROW", rows: int = 96, columns: int = 128) -> AcquisitionHeader:
    return AcquisitionHeader(
        rows=rows,
        columns=columns,
        phase_encode=phase_encode,  # type: ignore[arg-type]
        pixel_bandwidth_hz=200.0,
        field_strength_t=3.0,
        pixel_spacing_mm=(1.0, 1.0),
        te_ms=90.0,
        tr_ms=4000.0,
        ti_ms=None,
    )


def _head(rows: int = 96, columns: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[:rows, :columns]
    inside = ((yy - rows / 2) / 30) ** 2 + ((xx - columns / 2) / 24) ** 2 <= 1
    return np.where(inside, 0.6 + 0.4 * np.cos(xx / 5.0) ** 2, 0.0).astype(np.float32)


@pytest.mark.parametrize("artifact", torchio_style.TYPES)
def test_each_type_is_deterministic_non_negative_and_nothing_at_severity_zero(artifact) -> None:
    clean, header = _head(), _header()
    a = torchio_style.apply(clean, artifact, 0.8, header, seed=3)
    b = torchio_style.apply(clean, artifact, 0.8, header, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == clean.shape and a.min() >= 0
    assert np.abs(a - clean).max() > 0.01
    np.testing.assert_array_equal(torchio_style.apply(clean, artifact, 0.0, header, 3), clean)


@pytest.mark.parametrize("phase_encode, axis", [("ROW", 1), ("COL", 0)])
def test_ghosts_lie_along_phase_encode(phase_encode, axis) -> None:
    clean = _head()
    after = torchio_style.apply(clean, "ghosting", 1.0, _header(phase_encode), seed=0)
    change = (after - clean) ** 2
    # Lines across phase encode that miss the head get (almost) nothing: the ghosts are copies
    # of the head shifted along phase encode only.
    off_head = ~(clean > 0).any(axis=axis)
    outside = change.sum(axis=axis)[off_head].sum()
    assert outside < 0.01 * change.sum()


def test_a_spike_is_one_point_of_k_space() -> None:
    """The difference's strongest frequency is the drawn k-space point (or its mirror: the
    magnitude of a complex image is what is kept)."""
    clean = np.full((64, 64), 0.5, np.float32)
    after = torchio_style.apply(clean, "spike", 0.3, _header(rows=64, columns=64), seed=1)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(after - clean)))
    spectrum[32, 32] = 0  # the mean level moves too
    drawn = tuple(int(p) for p in np.floor(np.random.default_rng(1).random(2) * 64))
    mirror = tuple((64 - p) % 64 for p in drawn)
    strongest = np.unravel_index(int(np.argmax(spectrum)), spectrum.shape)
    assert tuple(int(p) for p in strongest) in (drawn, mirror)


def test_the_bias_field_is_the_exponential_of_a_cubic() -> None:
    clean, header = _head(), _header()
    after = torchio_style.apply(clean, "bias_field", 1.0, header, seed=5)
    inside = clean > 0
    log_ratio = np.log(after[inside] / clean[inside])
    yy, xx = np.nonzero(inside)
    y, x = yy / (header.rows - 1) * 2 - 1, xx / (header.columns - 1) * 2 - 1
    terms = np.column_stack([x**i * y**j for i in range(4) for j in range(4 - i)])
    _, residual, *_ = np.linalg.lstsq(terms, log_ratio, rcond=None)
    assert float(residual[0]) / len(log_ratio) < 1e-8
    assert np.ptp(log_ratio) > 0.1


def test_noise_has_the_drawn_level() -> None:
    clean, header = _head(), _header()
    after = torchio_style.apply(clean, "noise", 0.4, header, seed=2)
    sigma = 0.25 * 0.4 * float(np.percentile(clean[clean > 0.1], 99))
    background = after[clean == 0]
    assert background.mean() == pytest.approx(sigma * np.sqrt(2 / np.pi), rel=0.05)


def test_motion_changes_the_image_more_the_stronger_it_is() -> None:
    clean, header = _head(), _header()
    changes = [
        float(np.abs(torchio_style.apply(clean, "motion", s, header, seed=4) - clean).mean())
        for s in (0.2, 1.0)
    ]
    assert 0 < changes[0] < changes[1]


def test_motion_keeps_the_anatomy_where_it_was() -> None:
    """The still pose fills the part of k-space that holds the centre, as TorchIO does: the
    head's centre of mass stays put however far the other poses moved."""
    clean, header = _head(), _header()
    yy, xx = np.mgrid[: clean.shape[0], : clean.shape[1]]

    def centroid(image):
        return np.array([(image * yy).sum(), (image * xx).sum()]) / image.sum()

    shifts = [
        np.abs(centroid(torchio_style.apply(clean, "motion", 1.0, header, s)) - centroid(clean))
        for s in range(8)
    ]
    assert max(float(d.max()) for d in shifts) < 1.0


def test_a_type_torchio_does_not_make_is_refused() -> None:
    with pytest.raises(ValueError, match="TorchIO makes no 'zipper'"):
        torchio_style.apply(_head(), "zipper", 0.5, _header(), seed=0)


def test_a_torchio_style_test_set_has_our_clean_slices_and_only_its_types(tmp_path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    common = ["--slices", "200", "--seed", "6", "--splits", "test", "--quiet"]
    assert main(["dataset", "--out", str(ours), *common]) == 0
    assert main(["dataset", "--out", str(theirs), *common, "--style", "torchio"]) == 0
    manifest = json.loads((theirs / "manifest.json").read_text())
    assert manifest["style"] == "torchio" and manifest["command"].endswith("--style torchio")

    def slices(root):
        found = {}
        for shard in json.loads((root / "manifest.json").read_text())["shards"]:
            with np.load(root / shard["path"]) as z:
                for i in range(len(z["images"])):
                    clean = not z["severity"][i].any()
                    key = (str(z["source"][i]), int(z["slice_index"][i]), z["images"][i].shape)
                    found.setdefault(key, []).append((clean, z["images"][i], z["severity"][i]))
        return found

    a, b = slices(ours), slices(theirs)
    assert a.keys() == b.keys(), "the same sources, positions and matrices"
    allowed = [ARTIFACT_TYPES.index(t) for t in torchio_style.TYPES]
    others = [k for k in range(len(ARTIFACT_TYPES)) if k not in allowed]
    same = 0
    for key, entries in b.items():
        for _, _, severity in entries:
            assert not severity[others].any()
        for (clean_a, image_a, _), (clean_b, image_b, _) in zip(a[key], entries, strict=True):
            if clean_a and clean_b:
                np.testing.assert_array_equal(image_a, image_b)
                same += 1
    assert same >= 2  # seed 6 plans two of the 20 test slices clean in both styles


def test_a_noisy_robustness_set_is_the_same_slices_with_a_higher_noise_floor(tmp_path) -> None:
    """``dataset --noise-floor LO HI`` builds the same slices (sources, positions, matrices,
    artifacts) with every clean slice's floor drawn from LO..HI; a bad range is refused."""
    plain, noisy = tmp_path / "plain", tmp_path / "noisy"
    common = ["--slices", "120", "--seed", "4", "--splits", "test", "--quiet"]
    assert main(["dataset", "--out", str(plain), *common]) == 0
    assert main(["dataset", "--out", str(noisy), *common, "--noise-floor", "0.03", "0.03"]) == 0
    manifest = json.loads((noisy / "manifest.json").read_text())
    assert manifest["recipe"]["noise_floor_sigma"] == [0.03, 0.03]

    def air_levels(root):
        found = {}
        for shard in json.loads((root / "manifest.json").read_text())["shards"]:
            with np.load(root / shard["path"]) as z:
                for i in range(len(z["images"])):
                    image = z["images"][i]
                    corner = image[:8, :8] if not z["severity"][i].any() else None
                    key = (shard["path"], i, str(z["source"][i]), image.shape)
                    found[key] = (tuple(z["severity"][i]), corner)
        return found

    a, b = air_levels(plain), air_levels(noisy)
    assert a.keys() == b.keys()
    checked = 0
    for key, (severity, corner) in b.items():
        assert a[key][0] == severity, "the same artifacts, the same severities"
        if corner is not None and corner.size and a[key][1] is not None:
            # Rayleigh air: mean sigma*sqrt(pi/2); the plain set's floor is at most 0.015.
            assert float(corner.mean()) > float(a[key][1].mean())
            checked += 1
    assert checked >= 3
    for bad in (["0.05", "0.01"], ["-0.1", "0.2"]):
        assert main(["dataset", "--out", str(tmp_path / "x"), *common, "--noise-floor", *bad]) == 2
