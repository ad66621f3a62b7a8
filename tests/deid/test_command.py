"""``manage.py deidentify IN_DIR OUT_DIR``: good files out, one line per refused file, exit 1."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from django.core.management import CommandError, call_command

from backend.deid.profile import deidentify_bytes
from tests.deid.builders import CANARIES, mr_dataset, to_bytes

ROOT = Path(__file__).resolve().parents[2]


def test_the_command_de_identifies_a_tree_and_reports_each_refused_file(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "a" / "b").mkdir(parents=True)
    (src / "IM0001").write_bytes(to_bytes(mr_dataset(1)))  # no extension
    (src / "a" / "b" / "slice2.dcm").write_bytes(to_bytes(mr_dataset(2)))
    (src / "a" / "notes.txt").write_text("not dicom")
    (src / "a" / "truncated.dcm").write_bytes(to_bytes(mr_dataset(3))[:-300])
    env = {**os.environ, "ARTISCAN_VAR_DIR": str(tmp_path / "var")}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "deidentify", str(src), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = result.stdout.strip().splitlines()
    assert sorted(lines[:-1]) == [
        "refused a/notes.txt: not a DICOM Part 10 file (no DICM marker)",
        "refused a/truncated.dcm: an element declares a length past the end of the file",
    ]
    assert lines[-1] == "2 de-identified, 2 refused"
    written = sorted(out.iterdir())
    assert len(written) == 2 and all(p.suffix == ".dcm" for p in written)
    for path in written:
        data = path.read_bytes()
        assert not [c for c in CANARIES if c.encode() in data]
        assert pydicom.dcmread(path).PatientIdentityRemoved == "YES"
    assert "Traceback" not in result.stderr
    assert not [c for c in CANARIES if c in result.stdout + result.stderr]


def test_a_clean_tree_exits_zero(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "x.dcm").write_bytes(to_bytes(mr_dataset()))
    env = {**os.environ, "ARTISCAN_VAR_DIR": str(tmp_path / "var")}
    result = subprocess.run(
        [sys.executable, "manage.py", "deidentify", str(src), str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_output_files_are_named_by_the_uid_the_configured_key_gives(tmp_path, settings):
    settings.DEID_KEY = b"a key only this test uses, 32+ bytes"
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "deep" / "er").mkdir(parents=True)
    data = to_bytes(mr_dataset(7))
    (src / "deep" / "er" / "ZQXCANARYFAMILY_slice").write_bytes(data)
    (src / "empty").write_bytes(b"")
    stdout = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("deidentify", str(src), str(out), stdout=stdout)
    assert exited.value.code == 1
    _, expected = deidentify_bytes(data, key=settings.DEID_KEY)
    assert [p.name for p in out.iterdir()] == [f"{expected.SOPInstanceUID}.dcm"]
    lines = stdout.getvalue().splitlines()
    assert lines == ["refused empty: empty file", "1 de-identified, 1 refused"]
    assert sorted(tmp_path.iterdir()) == sorted([src, out])  # nothing written anywhere else


def test_an_output_directory_inside_the_input_is_refused(tmp_path):
    (tmp_path / "x").write_bytes(to_bytes(mr_dataset()))
    with pytest.raises(CommandError):
        call_command("deidentify", str(tmp_path), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_file_name_with_control_characters_is_printed_harmlessly(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "evil\x1b[2Jname\nrefused fake.dcm: ok").write_bytes(b"not dicom")
    stdout = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("deidentify", str(src), str(tmp_path / "out"), stdout=stdout)
    lines = stdout.getvalue().splitlines()
    assert (
        lines[0] == "refused evil?[2Jname?refused fake.dcm: ok: not a DICOM Part 10 file "
        "(no DICM marker)"
    )
    assert len(lines) == 2
    assert list((tmp_path / "out").iterdir()) == []
