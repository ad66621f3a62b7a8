"""How the workstation client groups waiting files into STOW-RS requests and decides that a file
the scanner writes is complete (real files on disk; no server needed)."""

from __future__ import annotations

import os
import time
from importlib import import_module
from pathlib import Path

client = import_module("workstation.__main__")


def test_waiting_files_go_together_within_the_limits():
    waiting = [Path(f"IM{i}") for i in range(5)]
    sizes = dict.fromkeys(waiting, 10)
    assert client.take_batch(waiting, sizes, max_files=3) == [Path("IM0"), Path("IM1"), Path("IM2")]
    assert client.take_batch(waiting, sizes, max_files=3, max_bytes=15) == [Path("IM3")]
    assert waiting == [Path("IM4")]


def test_a_lone_file_bigger_than_the_byte_limit_still_goes_alone():
    waiting = [Path("big"), Path("small")]
    assert client.take_batch(waiting, {Path("big"): 100, Path("small"): 1}, 8, 50) == [Path("big")]


def test_a_file_is_sent_once_it_stopped_changing_between_two_looks(tmp_path):
    seen: set[Path] = set()
    last: dict[Path, tuple[int, int]] = {}
    growing = tmp_path / "IM0001"
    growing.write_bytes(b"x" * 10)
    # Just written: not yet (it may still grow), however long the settle time.
    assert client.new_files(tmp_path, seen, settle_s=60, last=last) == []
    assert client.new_files(tmp_path, seen, settle_s=60, last=last) == [growing]
    assert client.new_files(tmp_path, seen, settle_s=60, last=last) == []  # once only


def test_a_file_that_grew_since_the_last_look_waits(tmp_path):
    seen: set[Path] = set()
    last: dict[Path, tuple[int, int]] = {}
    path = tmp_path / "IM0001"
    path.write_bytes(b"x")
    assert client.new_files(tmp_path, seen, settle_s=60, last=last) == []
    with open(path, "ab") as out:
        out.write(b"more")
    stamp = time.time() + 1
    os.utime(path, (stamp, stamp))  # a coarse clock must not hide the change either
    assert client.new_files(tmp_path, seen, settle_s=60, last=last) == []
    assert client.new_files(tmp_path, seen, settle_s=60, last=last) == [path]


def test_an_old_file_goes_at_the_first_look(tmp_path):
    path = tmp_path / "IM0001"
    path.write_bytes(b"x")
    old = time.time() - 10
    os.utime(path, (old, old))
    assert client.new_files(tmp_path, set(), settle_s=2, last={}) == [path]
