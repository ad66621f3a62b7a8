"""``python -m ml dataset`` writes shards and a manifest that keep the recipe's promises."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml import ARTIFACT_TYPES
from ml.__main__ import main
from ml.data import dataset, slices
from ml.data.sources import available_sources

N = 16


@pytest.fixture(autouse=True, scope="module")
def _sources_installed():
    """`make setup` installs the packaged brains; a missing one is a broken set-up, not a skip."""
    missing = {n: available_sources()[n] for n in ("spm_tpm", "pydeface_head", "spm_avg152")}
    missing = {n: why for n, why in missing.items() if why is not None}
    assert not missing, f"packaged sources missing ({missing}): run `make setup`"


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "a"
    assert main(["dataset", "--out", str(out), "--slices", str(N), "--seed", "7", "--quiet"]) == 0
    return out


def _shards(root: Path) -> list[tuple[dict[str, Any], dict[str, np.ndarray]]]:
    manifest = json.loads((root / "manifest.json").read_text())
    loaded = []
    for shard in manifest["shards"]:
        with np.load(root / shard["path"]) as data:
            loaded.append((shard, {k: data[k] for k in data.files}))
    return loaded


def test_it_writes_shards_of_the_declared_shapes_and_keys(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["artifact_types"] == list(ARTIFACT_TYPES)
    total = 0
    for shard, arrays in _shards(built):
        n = shard["slices"]
        rows, cols = shard["shape"]
        total += n
        assert arrays["images"].shape == (n, rows, cols) and arrays["images"].dtype == np.float32
        assert arrays["masks"].shape == (n, len(ARTIFACT_TYPES), rows, cols)
        assert arrays["masks"].dtype == np.uint8 and arrays["masks"].max() <= 1
        assert arrays["nondiagnostic_types"].shape == (n, len(ARTIFACT_TYPES))
        assert arrays["nondiagnostic"].dtype == bool
        for key in ("field_strength_t", "pixel_bandwidth_hz", "te_ms", "tr_ms", "ti_ms"):
            assert arrays[key].shape == (n,)
        assert set(arrays["phase_encode"].tolist()) <= {"ROW", "COL"}
        assert arrays["pixel_spacing_mm"].shape == (n, 2)
        fov = arrays["pixel_spacing_mm"][:, 1] * cols
        lo, hi = slices.FOV_COLUMNS_MM
        assert (fov > lo - 1).all() and (fov < hi + 1).all()
        assert np.isfinite(arrays["images"]).all() and arrays["images"].min() >= 0
        # A mask only where that type was applied.
        applied = arrays["severity"] > 0
        assert not arrays["masks"][~applied].any()
        ti = arrays["ti_ms"]
        assert np.all(np.isnan(ti) == (arrays["sequence"] != "FLAIR"))
    assert total == N == sum(s["slices"] for s in manifest["splits"].values())


def test_whole_sources_are_held_out_of_training(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    splits = manifest["splits"]
    subjects = {s: set(v["subjects"]) for s, v in splits.items()}
    assert not subjects["train"] & subjects["test"]
    assert not subjects["train"] & subjects["val"]
    assert not subjects["val"] & subjects["test"]
    for shard, arrays in _shards(built):
        assert set(arrays["source"].tolist()) <= set(splits[shard["split"]]["sources"])
        for source in set(arrays["source"].tolist()):
            assert manifest["sources"][source]["split"] == shard["split"]


def test_at_least_a_fifth_of_each_split_is_clean(built: Path) -> None:
    per_split: dict[str, list[bool]] = {}
    for shard, arrays in _shards(built):
        clean = np.asarray(~(arrays["severity"] > 0).any(axis=1), dtype=bool)
        per_split.setdefault(shard["split"], []).extend(bool(c) for c in clean.ravel())
    assert set(per_split) == {"train", "val", "test"}
    for flags in per_split.values():
        assert sum(flags) >= 0.2 * len(flags)
    train = per_split["train"]
    assert 0 < sum(train) < len(train)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not(
    built: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    assert main(["dataset", "--out", str(again), "--slices", str(N), "--seed", "7", "--quiet"]) == 0
    assert _digest(again) == _digest(built)
    other = tmp_path / "other"
    assert main(["dataset", "--out", str(other), "--slices", str(N), "--seed", "8", "--quiet"]) == 0
    assert _digest(other) != _digest(built)


def test_worker_processes_give_the_same_bytes(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "workers"
    dataset.build_dataset(out, slices_total=N, seed=7, workers=2, progress=False)
    # The manifest records the command line, which is the same; every shard must match.
    assert _digest(out) == _digest(built)


def test_some_slices_carry_several_artifacts() -> None:
    plan = dataset.plan_artifacts(np.random.default_rng(0), 400)
    sizes = [len(p) for p in plan]
    assert sizes.count(0) >= 100
    assert any(s >= 2 for s in sizes)
    assert all(len(set(p)) == len(p) for p in plan)
