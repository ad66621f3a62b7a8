"""``python -m ml gallery`` writes a PNG with a row per artifact type."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.__main__ import main
from ml.data.sources import available_sources


def test_it_writes_a_png(tmp_path: Path) -> None:
    if all(v is not None for v in available_sources().values()):
        pytest.fail("no packaged source installed: run `make setup`")
    out = tmp_path / "g" / "gallery.png"
    assert main(["gallery", "--out", str(out), "--size", "64", "--dpi", "30"]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    image = imread(str(out))
    # Ten rows of panels: taller than wide.
    assert image.shape[0] > image.shape[1] > 100
