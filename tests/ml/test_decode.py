"""Compressed pixel data are decoded in a child process: a decoder that fails, crashes or hangs
costs the call, not the process that asked (security checklist M-09)."""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from ml import decode
from tests.deid.builders import enhanced_mr_dataset, mr_dataset, to_bytes
from tests.scoring.builders import undecodable_mr


def _compressed(syntax, dataset=None, rows: int = 64, columns: int = 80) -> pydicom.Dataset:
    ds = dataset if dataset is not None else mr_dataset(1, rows=rows, columns=columns)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.compress(syntax, generate_instance_uid=False)
    return pydicom.dcmread(io.BytesIO(to_bytes(ds, syntax)))


def _children() -> list[int]:
    """Pids of this process's live decoding children."""
    return [c.proc.pid for c in decode._POOL._idle if c.proc.poll() is None]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie not yet reaped is gone for our purpose
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless], ids=str)
def test_compressed_pixels_decode_out_of_process_as_pydicom_decodes_them(syntax) -> None:
    ds = _compressed(syntax)
    got = decode.pixel_array(ds)
    np.testing.assert_array_equal(got, ds.pixel_array)
    assert got.dtype == ds.pixel_array.dtype
    assert _children(), "the decoding ran in a child that is kept for the next call"
    assert all(pid != os.getpid() for pid in _children())


def test_one_frame_of_a_compressed_multiframe() -> None:
    ds = _compressed(RLELossless, enhanced_mr_dataset())
    frames = int(ds.NumberOfFrames)
    assert frames > 1
    whole = ds.pixel_array
    np.testing.assert_array_equal(decode.pixel_array(ds), whole)
    np.testing.assert_array_equal(decode.pixel_array(ds, frames - 1), whole[frames - 1])
    np.testing.assert_array_equal(decode.pixel_array(ds, 0), whole[0])


def test_native_pixels_are_read_in_process() -> None:
    ds = pydicom.dcmread(io.BytesIO(to_bytes(mr_dataset(1), ExplicitVRLittleEndian)))
    decode.close_children()
    np.testing.assert_array_equal(decode.pixel_array(ds), ds.pixel_array)
    assert _children() == []


def test_a_broken_stream_is_a_clear_error_and_the_child_serves_on() -> None:
    broken = pydicom.dcmread(io.BytesIO(undecodable_mr(1)))
    with pytest.raises(decode.DecodeError, match="RLE segments"):
        decode.pixel_array(broken)
    before = _children()
    ds = _compressed(RLELossless)
    np.testing.assert_array_equal(decode.pixel_array(ds), ds.pixel_array)
    assert _children() == before, "an error answer keeps the child"


def _noisy_jpeg2000(size: int) -> pydicom.Dataset:
    noisy = mr_dataset(1, rows=size, columns=size)
    noisy.PixelData = np.random.default_rng(0).integers(0, 4096, (size, size), "<u2").tobytes()
    return _compressed(JPEG2000Lossless, noisy)


def test_a_decoder_that_crashes_mid_call_costs_that_call_not_the_process() -> None:
    """A real SIGSEGV of the decoding process while it decodes (what a crafted stream does to a
    native decoder; no installed decoder can be made to do it on purpose): the caller gets a
    DecodeError naming the signal, the dead child is replaced, the next call is served."""
    big = _noisy_jpeg2000(2048)
    decode.pixel_array(big)  # warm: the child has started and imported its decoders
    (pid,) = _children()
    busy = threading.Event()

    def crash_when_busy() -> None:
        # The child reads the request, then decodes (~0.5 s here): kill it once it has read.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{pid}/io") as io_stats:
                read = int(next(r for r in io_stats if r.startswith("rchar")).split()[1])
            if read > before + len(big.PixelData):
                os.kill(pid, signal.SIGSEGV)
                busy.set()
                return
            time.sleep(0.002)

    with open(f"/proc/{pid}/io") as io_stats:
        before = int(next(r for r in io_stats if r.startswith("rchar")).split()[1])
    killer = threading.Thread(target=crash_when_busy)
    killer.start()
    with pytest.raises(decode.DecodeError, match=r"crashed \(signal 11\)"):
        decode.pixel_array(big)
    killer.join()
    assert busy.is_set() and not _alive(pid)
    small = _compressed(RLELossless)
    np.testing.assert_array_equal(decode.pixel_array(small), small.pixel_array)
    assert pid not in _children()


def test_a_child_that_died_while_idle_is_replaced_without_failing_a_call() -> None:
    ds = _compressed(RLELossless)
    decode.pixel_array(ds)
    (pid,) = _children()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    np.testing.assert_array_equal(decode.pixel_array(ds), ds.pixel_array)
    assert pid not in _children() and len(_children()) == 1


def test_the_child_gets_no_secret_of_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    decode.close_children()
    monkeypatch.setenv("ARTISCAN_DEID_KEY", "canary-deid-key-zq")
    monkeypatch.setenv("DATABASE_URL", "postgres://canary:zq@db/x")
    ds = _compressed(RLELossless)
    decode.pixel_array(ds)
    (pid,) = _children()
    with open(f"/proc/{pid}/environ", "rb") as env:
        variables = env.read()
    assert b"canary" not in variables and b"PATH=" in variables
    decode.close_children()


def test_a_decoder_past_its_time_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    big = _noisy_jpeg2000(1024)
    decode.pixel_array(big)  # warm: the child has started and imported its decoders
    (pid,) = _children()
    monkeypatch.setenv("ARTISCAN_DECODE_TIMEOUT_S", "0.01")
    with pytest.raises(decode.DecodeError, match=r"longer than 0\.01 s"):
        for _ in range(20):  # a 1024² frame of noise takes far longer than 10 ms to decode
            decode.pixel_array(big)
    assert not _alive(pid)
    monkeypatch.delenv("ARTISCAN_DECODE_TIMEOUT_S")
    np.testing.assert_array_equal(decode.pixel_array(big), big.pixel_array)


def test_the_child_runs_under_an_address_space_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    decode.close_children()
    monkeypatch.setenv("ARTISCAN_DECODE_MEMORY_MB", "700")
    ds = _compressed(RLELossless)
    decode.pixel_array(ds)
    (pid,) = _children()
    with open(f"/proc/{pid}/limits") as limits:
        line = next(row for row in limits if row.startswith("Max address space"))
    assert line.split()[3] == str(700 << 20)
    decode.close_children()


def test_a_forked_process_starts_children_of_its_own() -> None:
    """Celery's prefork pool forks the worker: a forked process must not write into its parent's
    child's pipes (two processes' answers would interleave)."""
    ds = _compressed(RLELossless)
    decode.pixel_array(ds)
    parents = set(_children())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the forked process
        ok = False
        try:
            ok = (
                not decode._POOL._idle
                and np.array_equal(decode.pixel_array(ds), ds.pixel_array)
                and not set(_children()) & parents
            )
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
    np.testing.assert_array_equal(decode.pixel_array(ds), ds.pixel_array)
