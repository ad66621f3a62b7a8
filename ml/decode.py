"""Pixel data decoded where a decoder's crash cannot take the caller down (security checklist M-09).

JPEG, JPEG-LS, JPEG 2000 and RLE are decoded by native libraries (libjpeg, CharLS, OpenJPEG via
pylibjpeg and pyjpegls) that have had memory-safety bugs; a crafted stream that crashes one kills
the process it runs in. In the web process that was every request it served; in a scoring
worker, a task that Celery delivers again, to crash again. So encapsulated pixel data are
decoded here in a child process of our own, which

- holds only the pixel description and the encoded bytes (no other attribute is sent to it) and
  an environment of its own (no secret, key or credential of the caller's is passed on),
- runs under an address-space limit (``ARTISCAN_DECODE_MEMORY_MB``, 2048) and a per-call time
  limit (``ARTISCAN_DECODE_TIMEOUT_S``, 30; the child is killed past it),
- answers with a small JSON header and the raw array bytes (never a pickle: a child a decoder
  exploit took over could otherwise run code in the caller),
- and is replaced when it dies: a call it dies in gets a :class:`DecodeError` naming what
  happened (one that finds it dead while idle just gets a fresh child), and
  the next call starts a fresh child.

Native (uncompressed and deflated) pixel data never reach a native decoder and are read in
process by pydicom's NumPy path. Each process keeps up to ``ARTISCAN_DECODE_PROCESSES`` (2) idle
children, started on first use (~0.3 s) and discarded in a forked child process (Celery's pool)
so that no two processes share one.

Run as ``python -m ml.decode`` it is the child: length-prefixed requests on stdin, answers on
stdout.
"""

from __future__ import annotations

import json
import os
import re
import select
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

NATIVE_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",  # Implicit VR Little Endian
        "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian (inflated at read)
    }
)
PIXEL_KEYWORDS = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
)
"""All the child is told about a dataset: what it takes to decode its pixel data."""

_HEAD = struct.Struct("<IQ")  # JSON length, payload length
_CHILD_ENV = frozenset({"PATH", "PYTHONPATH", "LANG", "LC_ALL", "TMPDIR"})
_OWN = "ARTISCAN_DECODE_"
"""The only variables a decoding child gets: no key, secret or database URL of the caller's."""
_ERROR_CHARS = re.compile(r"[^ -~]")


class _Unused(Exception):
    """The child was gone before it read the request: nothing of this call reached it."""


class DecodeError(ValueError):
    """The pixel data could not be decoded; the message holds no patient data (the child never
    sees any) and is fit to show."""


def _limit_int(name: str, default: int) -> int:
    try:
        return max(int(os.environ.get(name, default)), 1)
    except ValueError:
        return default


def timeout_s() -> float:
    try:
        return max(float(os.environ.get("ARTISCAN_DECODE_TIMEOUT_S", "30")), 0.001)
    except ValueError:
        return 30.0


def is_native(ds: Any) -> bool:
    """Whether the pixel data are not encapsulated (a dataset without a transfer syntax, built
    in memory, is read as pydicom reads it: natively)."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    return not syntax or syntax in NATIVE_SYNTAXES


def pixel_array(ds: Any, index: int | None = None) -> NDArray[Any]:
    """The dataset's pixel array (all frames, or frame ``index``, 0-based), as pydicom gives it;
    encapsulated pixel data decoded in a child process. :class:`DecodeError` when it cannot be."""
    if is_native(ds):
        try:
            from pydicom.pixels.utils import pixel_array as decode

            return np.asarray(decode(ds, index=index))
        except Exception as exc:  # pydicom raises many kinds for broken pixel data
            raise DecodeError(f"cannot decode the pixel data: {type(exc).__name__}: {exc}") from exc
    if "PixelData" not in ds:
        raise DecodeError("the dataset has no pixel data")
    try:
        meta: dict[str, Any] = {
            "ts": str(ds.file_meta.TransferSyntaxUID),
            **{k: _plain(ds.get(k)) for k in PIXEL_KEYWORDS if ds.get(k) is not None},
        }
        payload = bytes(ds.PixelData)
        frames = int(meta.get("NumberOfFrames", 1) or 1)
        if index is not None and frames > 1:
            # Only the asked frame's fragments travel (a frame of a 256-frame file, not the file).
            from pydicom.encaps import encapsulate, get_frame

            extended = None
            if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
                extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
            frame = get_frame(payload, index, extended_offsets=extended, number_of_frames=frames)
            payload = encapsulate([frame])
            meta["NumberOfFrames"] = 1
        return _POOL.run(meta, payload)
    except DecodeError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        # No process to start (out of descriptors or memory), a header or frame table that
        # does not describe the data: the call fails, clearly, as any refusal does.
        raise DecodeError(f"cannot decode the pixel data: {type(exc).__name__}: {exc}") from exc


def _checked(answer: dict[str, Any], data: bytes, shape: tuple[int, ...]) -> NDArray[Any]:
    """The array of a child's answer, checked against the header's shape; DecodeError for a
    refusal (its reason shortened to printable ASCII), ValueError for a malformed answer."""
    if answer.get("ok") is not True:
        reason = _ERROR_CHARS.sub("?", str(answer.get("error", "?")))[:300]
        raise DecodeError(f"cannot decode the pixel data: {reason}")
    dtype = np.dtype(str(answer["dtype"]))
    got = tuple(int(n) for n in answer["shape"])
    if dtype.kind not in "uif" or got != shape or len(data) != int(np.prod(got)) * dtype.itemsize:
        raise DecodeError(f"decoded pixels {got} do not match the header's {shape}")
    return np.frombuffer(data, dtype=dtype).reshape(got).copy()


def _plain(value: Any) -> Any:
    return value if isinstance(value, int) else str(value)


def _expected_shape(meta: dict[str, Any]) -> tuple[int, ...]:
    rows, columns = int(meta.get("Rows", 0)), int(meta.get("Columns", 0))
    samples = int(meta.get("SamplesPerPixel", 1) or 1)
    frames = int(meta.get("NumberOfFrames", 1) or 1)
    shape: tuple[int, ...] = (rows, columns) + ((samples,) if samples > 1 else ())
    if frames > 1:
        shape = (frames, *shape)
    return shape


class _Child:
    """One decoding child process and its pipes."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k in _CHILD_ENV or k.startswith(_OWN)}
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ml.decode"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin.fileno(), self.proc.stdout.fileno()

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    @staticmethod
    def _wait(fd: int, event: int, deadline: float) -> None:
        """Until ``fd`` is ready (``select.poll``: no limit on descriptor numbers)."""
        poller = select.poll()
        poller.register(fd, event)
        while True:
            left_ms = int(max(deadline - time.monotonic(), 0) * 1000)
            if poller.poll(left_ms):
                return
            if left_ms == 0:
                raise TimeoutError

    def _write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            self._wait(self.stdin, select.POLLOUT, deadline)
            written = os.write(self.stdin, view[: 1 << 20])
            view = view[written:]

    def _read(self, size: int, deadline: float) -> bytes:
        parts = bytearray()
        while len(parts) < size:
            self._wait(self.stdout, select.POLLIN, deadline)
            piece = os.read(self.stdout, min(size - len(parts), 1 << 20))
            if not piece:
                raise EOFError
            parts += piece
        return bytes(parts)

    def call(
        self, meta: dict[str, Any], payload: bytes, limit: int
    ) -> tuple[dict[str, Any], bytes]:
        """Send one request, read its answer; the answer's header is checked here."""
        deadline = time.monotonic() + timeout_s()
        head = json.dumps(meta).encode()
        try:
            self._write(_HEAD.pack(len(head), len(payload)) + head, deadline)
        except (BrokenPipeError, ConnectionError):
            raise _Unused from None
        self._write(payload, deadline)
        size_json, size_data = _HEAD.unpack(self._read(_HEAD.size, deadline))
        if size_json > 1 << 12 or size_data > limit:
            raise ValueError("the decoder answered more than the image can hold")
        answer = json.loads(self._read(size_json, deadline))
        if not isinstance(answer, dict):
            raise ValueError("the decoder's answer is not an object")
        return answer, self._read(size_data, deadline)


class _Pool:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._started = 0
        self._free = threading.Condition(self._lock)

    def _take(self) -> _Child:
        deadline = time.monotonic() + timeout_s()
        with self._free:
            while True:
                while self._idle and self._idle[-1].proc.poll() is not None:
                    self._idle.pop().kill()  # died while idle (killed, out of memory): replaced
                    self._started -= 1
                if self._idle:
                    return self._idle.pop()
                if self._started < _limit_int("ARTISCAN_DECODE_PROCESSES", 2):
                    break
                if not self._free.wait(max(deadline - time.monotonic(), 0)):
                    raise DecodeError("every decoding process stayed busy past the time limit")
            self._started += 1
        try:
            return _Child()
        except BaseException:
            with self._free:
                self._started -= 1
                self._free.notify()
            raise

    def _give(self, child: _Child | None) -> None:
        with self._free:
            if child is None:
                self._started -= 1
            else:
                self._idle.append(child)
            self._free.notify()

    def run(self, meta: dict[str, Any], payload: bytes) -> NDArray[Any]:
        shape = _expected_shape(meta)
        bits = int(meta.get("BitsAllocated", 16) or 16)
        limit = int(np.prod(shape, dtype=np.int64)) * max(bits // 8, 1) * 2 + 64
        for attempt in range(2):
            child = self._take()
            try:
                answer, data = child.call(meta, payload, limit)
                result = _checked(answer, data, shape)
            except _Unused:  # gone before this call reached it: once more, with a fresh one
                child.kill()
                self._give(None)
                if attempt:
                    raise DecodeError("no decoding process could be started") from None
                continue
            except TimeoutError:
                child.kill()
                self._give(None)
                raise DecodeError(f"decoding took longer than {timeout_s():g} s: stopped") from None
            except DecodeError:  # a well-formed refusal: the child serves on
                self._give(child)
                raise
            except Exception as exc:  # EOF, broken pipe, a malformed answer: the child goes
                try:
                    code = child.proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    code = None
                child.kill()
                self._give(None)
                if code is not None and code < 0:
                    raise DecodeError(f"the decoder crashed (signal {-code})") from None
                if code is not None:
                    raise DecodeError(f"the decoder stopped (exit status {code})") from None
                raise DecodeError(f"the decoder answered nonsense ({type(exc).__name__})") from None
            except BaseException:
                child.kill()
                self._give(None)
                raise
            self._give(child)
            return result
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._free:
            idle, self._idle = self._idle, []
            self._started -= len(idle)
        for child in idle:
            child.kill()


_POOL = _Pool()
if hasattr(os, "register_at_fork"):
    # A forked process (Celery's prefork pool) must not share its parent's children's pipes.
    os.register_at_fork(after_in_child=_POOL._reset)


def close_children() -> None:
    """Stop this process's idle decoding children (they stop by themselves when it exits)."""
    _POOL.close()


# --- the child -----------------------------------------------------------------------------------


def _apply_limits() -> None:
    import resource

    memory = _limit_int("ARTISCAN_DECODE_MEMORY_MB", 2048) << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _decode(meta: dict[str, Any], payload: bytes) -> NDArray[Any]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels.utils import pixel_array as decode

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = meta["ts"]
    for keyword in PIXEL_KEYWORDS:
        if keyword in meta:
            setattr(ds, keyword, meta[keyword])
    ds.PixelData = payload
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return np.ascontiguousarray(decode(ds))


def _read_exact(fd: int, size: int) -> bytes | None:
    parts = bytearray()
    while len(parts) < size:
        piece = os.read(fd, size - len(parts))
        if not piece:
            return None
        parts += piece
    return bytes(parts)


def _serve() -> None:
    _apply_limits()
    answer_fd = os.dup(1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the answers
    while True:
        head = _read_exact(0, _HEAD.size)
        if head is None:
            return
        size_json, size_data = _HEAD.unpack(head)
        meta = json.loads(_read_exact(0, size_json) or b"{}")
        payload = _read_exact(0, size_data) or b""
        try:
            array = _decode(meta, payload)
            reply: dict[str, Any] = {
                "ok": True,
                "dtype": array.dtype.str,
                "shape": list(array.shape),
            }
            data = array.tobytes()
        except MemoryError:
            reply, data = {"ok": False, "error": "out of memory (the decoder's limit)"}, b""
        except Exception as exc:  # every decoder error becomes an answer
            reply, data = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:400]}, b""
        encoded = json.dumps(reply).encode()
        os.write(answer_fd, _HEAD.pack(len(encoded), len(data)) + encoded)
        view = memoryview(data)
        while view:
            view = view[os.write(answer_fd, view) :]


if __name__ == "__main__":
    _serve()
