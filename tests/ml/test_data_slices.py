"""Slices are cut in the right orientation and laid on the target grid as specified."""

from __future__ import annotations

import numpy as np

from ml.data import slices
from ml.data.slices import Geometry


def _geometry(**changes: object) -> Geometry:
    base = {
        "orientation": "axial",
        "index": 0,
        "matrix": (64, 64),
        "pixel_spacing_mm": (1.0, 1.0),
        "angle_deg": 0.0,
        "scale": 1.0,
        "shift_mm": (0.0, 0.0),
    }
    base.update(changes)
    return Geometry(**base)  # type: ignore[arg-type]


def test_resampling_at_the_same_spacing_without_rotation_keeps_the_plane() -> None:
    plane = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    out = slices.resample(plane, (1.0, 1.0), _geometry())
    np.testing.assert_allclose(out, plane, atol=1e-5)


def test_a_rotation_of_ninety_degrees_turns_the_plane() -> None:
    plane = np.zeros((65, 65), np.float32)
    plane[10:20, 30:35] = 1  # a bar near the top
    out = slices.resample(plane, (1.0, 1.0), _geometry(matrix=(65, 65), angle_deg=90.0))
    rows, cols = np.nonzero(out > 0.5)
    # The bar leaves the top rows and lies on one side, centred vertically.
    assert rows.min() > 25 and abs(rows.mean() - 32) < 3
    assert cols.max() < 25 or cols.min() > 40


def test_a_larger_matrix_at_finer_pixels_covers_the_same_field_of_view() -> None:
    plane = np.zeros((100, 100), np.float32)
    plane[25:75, 25:75] = 1
    out = slices.resample(
        plane, (2.0, 2.0), _geometry(matrix=(384, 512), pixel_spacing_mm=(0.5, 0.5))
    )
    assert out.shape == (384, 512)
    # 100 mm square → 200 px square at 0.5 mm.
    assert abs(int((out > 0.5).sum()) - 200 * 200) < 0.03 * 200 * 200


def test_cut_gives_each_orientation_its_plane_and_spacing() -> None:
    volume = np.zeros((10, 20, 30), np.float32)
    maps = {"x": volume}
    axial, axial_mm = slices.cut(maps, (1.0, 2.0, 3.0), "axial", 5)
    coronal, coronal_mm = slices.cut(maps, (1.0, 2.0, 3.0), "coronal", 5)
    sagittal, sagittal_mm = slices.cut(maps, (1.0, 2.0, 3.0), "sagittal", 5)
    assert axial["x"].shape == (20, 10) and axial_mm == (2.0, 1.0)
    assert coronal["x"].shape == (30, 10) and coronal_mm == (3.0, 1.0)
    assert sagittal["x"].shape == (30, 20) and sagittal_mm == (3.0, 2.0)


def test_slice_positions_cover_the_whole_head_from_base_to_vertex() -> None:
    presence = np.zeros((20, 20, 40), np.float32)
    presence[5:15, 5:15, 3:37] = 1
    assert slices.signal_extent(presence, 2) == (3, 36)
    from ml.data.sources import SourceVolume

    volume = SourceVolume("v", "v", "weighted", {"T1": presence}, (1.0, 1.0, 1.0), "test")
    rng = np.random.default_rng(0)
    drawn = [slices.sample_geometry(rng, volume, presence) for _ in range(400)]
    axial = [g.index for g in drawn if g.orientation == "axial"]
    assert min(axial) == 3 and max(axial) == 36
    assert {g.orientation for g in drawn} == {"axial", "coronal", "sagittal"}
    assert {g.matrix for g in drawn} == set(slices.MATRICES)


def test_the_noise_floor_is_rician_with_the_set_sigma() -> None:
    rng = np.random.default_rng(0)
    background = slices.add_noise_floor(np.zeros((256, 256), np.float32), 0.01, rng)
    # Rayleigh: mean sigma·sqrt(pi/2).
    assert abs(float(background.mean()) - 0.01 * np.sqrt(np.pi / 2)) < 5e-4


def test_training_slices_draw_a_wider_noise_floor_than_held_out_ones() -> None:
    """Held-out slices keep their uniform 0.004-0.015 draw (their bytes stay the same across
    rounds); training slices draw log-uniformly over 0.004-0.045; an override is uniform over
    its own range. Each is one draw from the generator, so the slices after it do not move."""

    def draws(**kwargs: object) -> tuple[np.ndarray, dict]:
        rng = np.random.default_rng(3)
        values = np.array([slices.draw_noise_sigma(rng, **kwargs) for _ in range(4000)])  # type: ignore[arg-type]
        return values, rng.bit_generator.state

    reference = np.random.default_rng(3)
    plain = reference.uniform(*slices.NOISE_FLOOR, 4000)
    held_out, state = draws(varied=False)
    np.testing.assert_array_equal(held_out, plain)
    assert state == reference.bit_generator.state

    train, train_state = draws(varied=True)
    assert train_state == state, "one draw per slice"
    lo, hi = slices.TRAIN_NOISE_FLOOR
    assert lo <= train.min() and train.max() <= hi
    assert hi > 2.5 * slices.NOISE_FLOOR[1], "reaches clinical noise levels"
    # Log-uniform: the median is the geometric mean, and the held-out range keeps ~half the mass.
    assert abs(np.median(train) - np.sqrt(lo * hi)) < 0.1 * np.sqrt(lo * hi)
    inside = np.mean(train <= slices.NOISE_FLOOR[1])
    assert 0.45 < inside < 0.62

    # --noise-floor 0.004 0.015 rebuilds the training sets of before (one uniform draw).
    old_training, _ = draws(varied=True, override=slices.NOISE_FLOOR)
    np.testing.assert_array_equal(old_training, plain)

    forced, forced_state = draws(varied=True, override=(0.02, 0.04))
    assert forced_state == state
    assert 0.02 <= forced.min() and forced.max() <= 0.04 and abs(forced.mean() - 0.03) < 1e-3
