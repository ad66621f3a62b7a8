"""The operator's workstation client against a real server and scoring worker: each slice sent
comes back with its verdict and advice; a refused file says why."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


def test_sent_slices_get_their_verdicts(asgi_server, celery_worker_process, operator_a, tmp_path):
    files = []
    for i in (1, 2):
        path = tmp_path / f"IM{i:04d}"
        path.write_bytes(to_bytes(mr_dataset(i, rows=64, columns=64)))
        files.append(str(path))
    junk = tmp_path / "README.txt"
    junk.write_text("not an image")
    token = tmp_path / "token"
    token.write_text(operator_a.token)
    result = subprocess.run(
        [sys.executable, "-m", "workstation", "--server", f"http://{asgi_server}",
         "--token-file", str(token), "--stop-below", "101", "send", *files, str(junk)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert "IM0001: sent" in out and "IM0002: sent" in out
    assert "README.txt: refused - not a DICOM Part 10 file" in out
    verdicts = re.findall(r"^slice (\d+): index (\d+)/100 - (.+)$", out, flags=re.MULTILINE)
    assert sorted(v[0] for v in verdicts) == ["1", "2"]  # one verdict per stored slice
    assert out.count("STOP THE SEQUENCE") == 2  # every index is below 101
