"""What training on a lent GPU box needs (benchmarks/gpu_session.sh): the brains carried as one
source pack, a build of the train and val splits only, shards loaded in worker processes,
batches assembled ahead on threads, and runs that end within a time budget."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from ml.__main__ import main
from ml.data import sources

TRAIN_VAL = ["icbm152_2009a", "spm_tpm", "nimare_mni152", "pydeface_head"]


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pack") / "pack.npz"
    assert main(["dataset", "--pack", str(path), "--splits", "train", "val"]) == 0
    return path


def _shards(root: Path) -> dict[str, dict[str, np.ndarray]]:
    manifest = json.loads((root / "manifest.json").read_text())
    out = {}
    for shard in manifest["shards"]:
        with np.load(root / shard["path"]) as z:
            out[shard["path"]] = {k: z[k] for k in z.files}
    return out


def test_a_pack_holds_the_train_and_val_brains_to_float16_precision(pack: Path) -> None:
    packed = sources.read_pack(pack)
    assert sorted(packed) == sorted(TRAIN_VAL)
    original = sources.load_source("spm_tpm")
    again = packed["spm_tpm"]
    assert (again.subject, again.kind, again.voxel_mm) == (
        original.subject, original.kind, original.voxel_mm
    )  # fmt: skip
    for key, value in original.maps.items():
        np.testing.assert_allclose(again.maps[key], value, rtol=1e-3, atol=1e-7)
    assert sources.read_pack(pack, ["pydeface_head"]).keys() == {"pydeface_head"}


def test_a_build_from_the_pack_never_touches_the_packages_and_matches_theirs(
    pack: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["dataset", "--slices", "12", "--seed", "4", "--splits", "train", "val", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "packages")]) == 0

    def gone() -> sources.SourceVolume:
        raise sources.SourceMissing("the packages are not installed on this box")

    for name in TRAIN_VAL:
        monkeypatch.setitem(sources.LOADERS, name, gone)
    monkeypatch.delenv(sources.PACK_ENV, raising=False)
    assert main([*args, "--out", str(tmp_path / "nothing")]) == 1  # no pack: refused clearly
    assert main([*args, "--out", str(tmp_path / "packed"), "--sources", str(pack)]) == 0
    a, b = _shards(tmp_path / "packages"), _shards(tmp_path / "packed")
    assert a.keys() == b.keys() and a
    for path, arrays in a.items():
        assert arrays["images"].shape == b[path]["images"].shape
        peak = float(np.abs(arrays["images"]).max())
        np.testing.assert_allclose(b[path]["images"], arrays["images"], atol=2e-3 * peak)
        # The ground-truth rule thresholds differences: float16 may move a pixel on its edge.
        assert (b[path]["masks"] != arrays["masks"]).mean() < 1e-3


def test_a_split_only_build_holds_the_slices_a_full_build_gives_that_split(tmp_path: Path) -> None:
    common = ["dataset", "--slices", "12", "--seed", "9", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "all")]) == 0
    assert main([*common, "--out", str(tmp_path / "val"), "--splits", "val"]) == 0
    manifest = json.loads((tmp_path / "val" / "manifest.json").read_text())
    assert {s["split"] for s in manifest["shards"]} == {"val"}
    assert manifest["splits"]["train"]["slices"] == manifest["splits"]["test"]["slices"] == 0
    assert manifest["command"].endswith("--splits val")
    for shard in manifest["shards"]:
        assert (tmp_path / "val" / shard["path"]).read_bytes() == (
            tmp_path / "all" / shard["path"]
        ).read_bytes()


def test_bad_pack_arguments_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.npz"
    assert main(["dataset", "--out", str(tmp_path / "d"), "--sources", str(missing)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["dataset", "--slices", "12"]) == 2  # neither --out nor --pack


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    assert main(["dataset", "--out", str(out), "--slices", "40", "--seed", "6", "--quiet"]) == 0
    return out


def test_worker_processes_load_the_split_one_process_loads(data_dir: Path) -> None:
    from ml.model.data import load_split

    for working in (None, 32):
        one = load_split(data_dir, "train", limit=21, working=working)
        for cache in data_dir.glob(".working-*"):
            cache.unlink()  # the second load must resample, not read the first one's cache
        two = load_split(data_dir, "train", limit=21, working=working, workers=2)
        assert len(one) == len(two) == 21
        for a, b in zip(one.images + one.masks, two.images + two.masks, strict=True):
            np.testing.assert_array_equal(a, b)
        for field in ("headers", "nondiagnostic", "present"):
            np.testing.assert_array_equal(getattr(one, field), getattr(two, field))
        assert one.meta == two.meta


def test_batches_assembled_ahead_on_threads_are_the_batches_of_one_thread(data_dir: Path) -> None:
    from ml.model.data import load_split, shape_groups, slice_weights
    from ml.model.train import TrainConfig, _training_batches

    split = load_split(data_dir, "train", working=32)
    streams = []
    for workers in (1, 3):
        config = TrainConfig(data=str(data_dir), steps_per_epoch=7, batch_size=3, working=32,
                             workers=workers)  # fmt: skip
        rng = np.random.default_rng([0, 2])
        batches = _training_batches(config, split, shape_groups(split), slice_weights(split), rng)
        streams.append(list(batches))
    assert len(streams[0]) == len(streams[1]) == 7
    for (xa, ya), (xb, yb) in zip(*streams, strict=True):
        for key in xa:
            np.testing.assert_array_equal(xa[key], xb[key])
        for key in ya:
            np.testing.assert_array_equal(ya[key], yb[key])


def test_a_time_budget_ends_the_run_early_and_records_its_epochs(
    data_dir: Path, tmp_path: Path
) -> None:
    args = ["train", "--data", str(data_dir), "--steps", "1", "--batch", "2", "--working", "32",
            "--base", "4", "--depth", "2", "--quiet", "--workers", "2"]  # fmt: skip
    spent = tmp_path / "spent"
    assert main([*args, "--out", str(spent), "--epochs", "40", "--time-budget", "0.01"]) == 0
    assert len((spent / "history.csv").read_text().splitlines()) == 2  # header + one epoch
    assert json.loads((spent / "config.json").read_text())["epochs"] == 1
    roomy = tmp_path / "roomy"
    assert main([*args, "--out", str(roomy), "--epochs", "2", "--time-budget", "1e6"]) == 0
    assert len((roomy / "history.csv").read_text().splitlines()) == 3
    assert json.loads((roomy / "config.json").read_text())["epochs"] == 2
    with h5py.File(roomy / "rewind.weights.h5") as rewind:  # weights only, no Adam moments
        assert "optimizer" not in rewind and "layers" in rewind
    # Pruning shares its budget between the rounds: with none left each retrains one epoch.
    assert main(["prune", str(roomy), "--to", "0.25", "--rounds", "2", "--epochs", "5",
                 "--time-budget", "0", "--quiet"]) == 0  # fmt: skip
    report = json.loads((roomy / "pruned" / "prune.json").read_text())
    assert report["retrain_epochs_per_round"] == [1, 1]
    assert report["fraction"] <= 0.25


def test_the_first_epochs_compilation_does_not_count_in_the_pace_of_the_next() -> None:
    """A process's first epoch compiled every batch shape (the training step, validation and
    the tuned IoU's predictions): under a time budget its steps count at their median and its
    validation at most a fifth of them (or 5 s), or a GPU run whose first epoch was mostly
    compilation stops after it (the second GPU session: 400 steps in 150 s, 0.037 s a step
    once compiled, twice cut to one epoch)."""
    from ml.model.train import _epoch_pace

    steps = [30.0, 25.0] + [0.05] * 398  # two shapes compiled, then the steady pace
    seconds = sum(steps) + 60.0  # + validation with its own compilations
    assert _epoch_pace(seconds, steps, first=True) == pytest.approx(400 * 0.05 + 5.0)
    slow = [1.0] * 400  # a CPU: validation counts up to a fifth of the steps
    assert _epoch_pace(400 + 60.0, slow, first=True) == pytest.approx(460.0)
    assert _epoch_pace(400 + 200.0, slow, first=True) == pytest.approx(480.0)  # capped
    assert _epoch_pace(seconds, steps, first=False) == seconds  # later epochs: as they ran
    assert _epoch_pace(12.0, [], first=True) == 12.0
