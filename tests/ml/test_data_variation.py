"""Training slices get head appearances the templates lack; validation and test slices do not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ml.data import dataset, slices, variation
from ml.data.sources import load_source


def _disc(size: int = 128, radius: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    head = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2
    image = np.where(head, 1.0, 0.0).astype(np.float32)
    image[head] *= 0.6 + 0.4 * ((yy[head] + xx[head]) % 7) / 7  # not flat: p99 is the top
    return image, head


@pytest.mark.parametrize("seed", range(6))
def test_the_scalp_lies_outside_the_head_beyond_its_gap(seed: int) -> None:
    image, head = _disc()
    rng = np.random.default_rng(seed)
    scalp = variation.add_scalp(image, head, rng, pixel_mm=1.0)
    # The head itself is untouched (partial volume reaches at most one pixel in).
    inner = ndimage.binary_erosion(head, iterations=2)
    np.testing.assert_array_equal(scalp.image[inner], image[inner])
    assert scalp.rim.max() > 0.5, "a rim was drawn"
    assert not (scalp.rim[inner] > 0).any() and not (scalp.gap[inner] > 0).any()
    distance = ndimage.distance_transform_edt(~head)
    rim_at = scalp.rim > 0.5
    assert distance[rim_at].max() <= variation.GAP_MM[1] * 2 + variation.RIM_MM[1] * 2 + 2
    # Rim pixels carry the drawn level (a share of the head's p99) times a positive speckle.
    p99 = float(np.percentile(image[head], 99))
    level = float(np.median(scalp.image[rim_at]))
    assert variation.RIM_LEVEL[0] * p99 * 0.3 <= level <= variation.RIM_LEVEL[1] * p99 * 2
    # The gap is dark: a few per cent of the head's p99 at most.
    gap_at = (scalp.gap > 0.9) & (scalp.rim < 0.01)
    if gap_at.any():
        assert scalp.image[gap_at].max() <= 0.07 * p99


def test_texture_stays_inside_the_head_and_roughens_it() -> None:
    _, head = _disc()
    flat = np.where(head, 0.8, 0.0).astype(np.float32)
    out = variation.add_texture(flat, head, np.random.default_rng(3))
    np.testing.assert_array_equal(out[~head], flat[~head])
    inner = ndimage.binary_erosion(head, iterations=3)
    assert out[inner].std() > 0.02 * 0.8
    assert abs(float(out[inner].mean()) - 0.8) < 0.05 * 0.8


def test_nothing_is_drawn_for_validation_and_test_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation and test slices never reach the variations, and the switched-off step draws
    nothing from the slice's generator, so those slices are what they were before it existed
    (rounds stay comparable); training slices do reach them."""
    volume = load_source("spm_avg152")
    geometry = slices.sample_geometry(
        np.random.default_rng(0), volume, dataset.presence_map(volume)
    )
    image = np.zeros(geometry.matrix, np.float32)
    image[10:-10, 10:-10] = 1.0
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    same, rim, gap = dataset._vary(image, rng, geometry, False, stripped=True)
    assert rng.bit_generator.state == state and rim is None and gap is None
    np.testing.assert_array_equal(same, image)

    def refuse(*args, **kwargs):
        raise AssertionError("a variation was drawn")

    monkeypatch.setattr(variation, "add_texture", refuse)
    monkeypatch.setattr(variation, "add_scalp", refuse)
    dataset._VOLUMES["spm_avg152"] = (volume, dataset.presence_map(volume))
    for split in ("val", "test"):
        for index in range(4):
            dataset._build_one((0, split, index, "spm_avg152", (), "artiscan", None))
    with pytest.raises(AssertionError, match="a variation was drawn"):
        for index in range(8):  # half the training slices get a texture, a third a scalp
            dataset._build_one((0, "train", index, "spm_avg152", (), "artiscan", None))
    assert dataset.VARIED_SPLITS == ("train",)


def test_training_artifacts_are_also_made_by_the_second_generator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Some artifacts of training slices, of the types both generators make, come from the
    TorchIO-style one; validation and test slices never reach it (and draw nothing for it)."""
    from ml.simulate import torchio_style

    made: list[tuple[str, str]] = []
    real = torchio_style.apply

    def recording(image, artifact, *args, **kwargs):
        made.append((split, artifact))
        return real(image, artifact, *args, **kwargs)

    monkeypatch.setattr(torchio_style, "apply", recording)
    volume = load_source("spm_avg152")
    dataset._VOLUMES["spm_avg152"] = (volume, dataset.presence_map(volume))
    built = {}
    for split in ("val", "test", "train"):
        for index in range(10):
            job = (0, split, index, "spm_avg152", ("ghosting", "zipper", "noise"), "artiscan", None)
            built[split, index] = dataset._build_one(job)
    assert made and {s for s, _ in made} == {"train"}
    assert {a for _, a in made} <= set(torchio_style.TYPES) and len(made) < 20
    # The slices a second-generator artifact went into still carry its mask.
    assert all(built["train", i].masks.any() for i in range(10))


def test_a_skull_stripped_training_slice_gets_a_scalp_in_image_and_maps() -> None:
    """ICBM152 2009a has no scalp; most of its training slices get one, the gap as bone and
    the rim as partly fat, and (almost) no air where the rim and the gap are."""
    volume = load_source("icbm152_2009a")
    presence = dataset.presence_map(volume)
    seen = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        geometry = slices.sample_geometry(rng, volume, presence)
        plain = dataset.clean_slice(volume, geometry, np.random.default_rng(seed))
        varied = dataset.clean_slice(volume, geometry, np.random.default_rng(seed), vary=True)
        if plain is None or varied is None:
            continue
        _, plain_maps, _ = plain
        image, maps, _ = varied
        if not maps["bone"].any():
            continue  # no scalp drawn for this slice (texture only, or nothing)
        seen += 1
        assert not plain_maps["bone"].any(), "the source has no bone"
        rim = (maps["fat"] > 0.2) & (maps["bone"] < 0.05)
        assert rim.any(), "the rim is partly fat"
        assert not (plain_maps["fat"] > 0).any(), "the source has no fat"
        assert maps["air"][maps["bone"] > 0.9].max() < 0.1
        assert maps["air"][rim].max() < 0.8
        background = (plain_maps["head"] == 0) & (maps["bone"] == 0) & (maps["fat"] == 0)
        # The rim stands out of the air whatever the training noise floor (sigma up to 0.045
        # of the head's p99: a Rayleigh median of ~0.053 in the air).
        assert np.median(image[rim]) > np.median(image[background]) + 0.1
    assert seen >= 4, f"only {seen} of 12 skull-stripped slices got a scalp"


def test_the_manifest_records_the_variation(tmp_path) -> None:
    from ml.__main__ import main

    out = tmp_path / "ds"
    assert main(["dataset", "--out", str(out), "--slices", "4", "--seed", "1", "--quiet"]) == 0
    import json

    recipe = json.loads((out / "manifest.json").read_text())["recipe"]["head_variation"]
    assert recipe["splits"] == ["train"]
    second = json.loads((out / "manifest.json").read_text())["recipe"]["second_generator"]
    assert second == {
        "chance": dataset.SECOND_GENERATOR_CHANCE,
        "types": ["motion", "ghosting", "spike", "bias_field", "noise"],
        "splits": ["train"],
    }
    assert recipe["scalp_chance_skull_stripped"] == variation.SCALP_CHANCE_STRIPPED
