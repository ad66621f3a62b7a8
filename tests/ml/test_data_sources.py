"""The packaged brain sources load as sane volumes, and a missing one names its install step."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from ml.data import sources
from ml.data.sources import LOADERS, SourceMissing, read_smp


def _load(name: str) -> sources.SourceVolume:
    try:
        return LOADERS[name]()
    except SourceMissing as exc:
        # `make setup` installs every source: a missing one is a broken installation.
        pytest.fail(str(exc))


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_each_installed_source_is_a_sane_head(name: str) -> None:
    volume = _load(name)
    assert volume.name == name
    assert volume.maps
    shape = volume.shape
    for key, array in volume.maps.items():
        assert array.dtype == np.float32, key
        assert array.shape == shape, key
        assert np.isfinite(array).all(), key
    assert all(0.3 <= v <= 5.0 for v in volume.voxel_mm)
    extent_mm = [n * v for n, v in zip(shape, volume.voxel_mm, strict=True)]
    # A head is 140-260 mm across in-plane.
    assert 140 <= extent_mm[0] <= 300 and 140 <= extent_mm[1] <= 300
    if volume.kind == "tissue":
        total = sum(volume.maps[k] for k in ("gm", "wm", "csf", "bone", "soft", "air"))
        assert float(np.abs(total - 1).max()) < 0.05
        brain = volume.maps["gm"] + volume.maps["wm"]
        assert 0.03 < float(brain.mean()) < 0.6
    elif volume.kind == "weighted":
        for array in volume.maps.values():
            assert array.min() >= 0
            assert 0.05 < float((array > 0.1).mean()) < 0.9
    else:
        head = volume.maps["pd"] > 0.05
        assert 0.2 < float(head.mean()) < 0.9
        t1 = volume.maps["t1_ms"][head]
        assert 300 < float(np.median(t1)) < 2500


def test_tissue_sources_put_the_brain_in_the_middle_and_the_scalp_outside() -> None:
    volume = _load("spm_tpm")
    x, y, z = volume.shape
    centre = (
        slice(x // 2 - 5, x // 2 + 5),
        slice(y // 2 - 5, y // 2 + 5),
        slice(z // 2, z // 2 + 10),
    )
    assert volume.maps["wm"][centre].mean() + volume.maps["gm"][centre].mean() > 0.5
    assert volume.maps["air"][0, 0, 0] > 0.9
    # Superior is the last axis (RAS): the top slab holds less brain than the middle.
    assert volume.maps["gm"][:, :, -5:].sum() < volume.maps["gm"][:, :, z // 2].sum()


def test_odin_maps_read_as_measured_relaxation_times() -> None:
    volume = _load("odin_brain")
    assert volume.shape == (128, 128, 1)
    assert volume.voxel_mm[:2] == pytest.approx((200 / 128, 200 / 128))
    t2 = volume.maps["t2_ms"][volume.maps["pd"] > 0.05]
    assert 40 < float(np.median(t2)) < 200


def test_read_smp_decodes_the_jcamp_dx_arrays(tmp_path: Path) -> None:
    values = np.arange(6, dtype="<f4").reshape(1, 1, 1, 2, 3) * 1.5
    payload = base64.b64encode(values.tobytes()).decode()
    text = (
        "##TITLE=Virtual Sample\n##JCAMPDX=4.24\n##$FOV=( 3 )\n200.0 200.0 4.0\n"
        f"##$T1map=( 1, 1, 1, 2, 3 )\nEncoding:base64,littleEndian,float\n{payload}\n"
        "##$B1map=( 0 )\n<>\n##END=\n"
    )
    path = tmp_path / "tiny.smp"
    path.write_text(text)
    arrays = read_smp(path)
    assert list(arrays) == ["T1map"]
    np.testing.assert_array_equal(arrays["T1map"], values)


def test_a_missing_odin_sample_names_the_install_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARTISCAN_ML_DATA", str(tmp_path))
    with pytest.raises(SourceMissing, match=re.escape("deploy/install-ml-data.sh")):
        sources.load_odin_brain()
    assert "install-ml-data" in (sources.available_sources()["odin_brain"] or "")


def test_a_missing_package_names_the_pip_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(SourceMissing, match=re.escape("--no-deps -r requirements/ml-nodeps.txt")):
        sources.load_spm_tpm()
