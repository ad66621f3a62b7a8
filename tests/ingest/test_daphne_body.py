"""Under daphne a request body stays in memory, never in a file (Twisted writes any body of
100 kB or more to an anonymous temporary file: original DICOM, the patient's name in it, on
disk before the door), and a body over ``ARTISCAN_MAX_REQUEST_MB`` is answered 413 without
being kept. A real daphne; the body is sent slowly so the test looks at the process' open files
while it is in flight."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import _free_port, _listening_process, _server_env, _wait_for
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]

BOUNDARY = "bodytest"


@pytest.fixture
def daphne(tmp_path):
    """daphne serving the application with a 1 MB request limit and its own TMPDIR."""
    from django.conf import settings

    spool = tmp_path / "tmp"
    spool.mkdir()
    port = _free_port()
    env = _server_env(settings.DATABASES["default"]["NAME"])
    env.update(TMPDIR=str(spool), ARTISCAN_MAX_REQUEST_MB="1")
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    command.append("backend.config.asgi:application")
    with _listening_process(
        command, env=env, port=port, log=tmp_path / "daphne.log", what="daphne"
    ) as proc:
        yield proc, port, spool


def _stow_body(n: int) -> bytes:
    parts = [
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + to_bytes(mr_dataset(400 + i, rows=256, columns=256))
        + b"\r\n"
        for i in range(n)
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _head(port: int, token: str, length: int | None) -> bytes:
    lines = [
        "POST /dicomweb/studies HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Authorization: Bearer {token}",
        f'Content-Type: multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        "Accept: application/dicom+json",
        "Connection: close",
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(sock: socket.socket) -> tuple[int, bytes]:
    sock.settimeout(60)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest


def _open_files(pid: int) -> list[str]:
    links = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue  # closed meanwhile
    return links


def test_a_stow_body_in_flight_is_in_no_file_and_is_stored_whole(daphne, operator_a):
    proc, port, spool = daphne
    body = _stow_body(4)
    assert 100_000 < len(body) < 1024 * 1024  # what Twisted would spool, within the limit
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(port, operator_a.token, len(body)) + body[: len(body) // 2])
        time.sleep(1.0)  # the server has read the first half by now and waits for the rest
        in_flight = _open_files(proc.pid)
        sock.sendall(body[len(body) // 2 :])
        status, rest = _answer(sock)
    assert status == 200, rest[-500:]
    assert rest.count(b"00081155") == 4  # four stored instances in the answer
    spooled = [link for link in in_flight if link.startswith(str(spool)) or "(deleted)" in link]
    assert spooled == [], spooled
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_refused_with_413_and_not_kept(daphne, operator_a, declared):
    from backend.studies.models import Instance

    proc, port, _spool = daphne
    before = Instance.objects.count()
    body = _stow_body(12)  # ~1.5 MB, over the 1 MB limit
    assert len(body) > 1024 * 1024
    with socket.create_connection(("127.0.0.1", port)) as sock:
        if declared:
            sock.sendall(_head(port, operator_a.token, len(body)) + body)
        else:
            sock.sendall(_head(port, operator_a.token, None))
            for start in range(0, len(body), 200_000):
                piece = body[start : start + 200_000]
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        status, rest = _answer(sock)
    assert status == 413
    assert b"over 1 MB" in rest
    # Nothing of it was stored, and the server goes on answering.
    assert Instance.objects.count() == before
    small = _stow_body(1)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(port, operator_a.token, len(small)) + small)
        status, rest = _answer(sock)
    assert status == 200, rest[-500:]
    _wait_for(lambda: proc.poll() is None, 1, "daphne still running")


def test_the_body_is_held_once_read_whole_without_a_copy_and_released_when_handed_over():
    """What Twisted and daphne do with a request's content object: write the pieces as they
    arrive, seek to the start, read (Twisted parses a form body, seeks back, daphne reads it
    again), close. The whole body comes back as one object, the same one each time; a closed
    body holds nothing (daphne's request object outlives the request until a garbage
    collection)."""
    from backend.config.daphne_body import Body

    body = Body(limit=100)
    pieces = [b"a" * 30, bytearray(b"b" * 30), memoryview(b"c" * 30)]
    for piece in pieces:
        assert body.write(piece) == 30
    body.seek(0)
    whole = body.read()
    assert whole == b"a" * 30 + b"b" * 30 + b"c" * 30
    body.seek(0)
    assert body.read(1000) is whole  # no second copy of the body
    body.seek(10)
    assert body.read(5) == b"aaaaa" and body.tell() == 15
    assert body.read(200) == whole[15:] and body.read(10) == b""
    body.close()
    assert body.closed and body.read() == b"" and body.write(b"late") == 4
    over = Body(limit=100)
    over.write(b"x" * 60)
    over.write(b"y" * 60)  # past the limit: nothing kept, from now on nothing
    over.write(b"z")
    assert over.too_large and over.read() == b""


def test_a_body_of_declared_length_is_held_once_while_it_arrives_and_once_read():
    """Twisted tells the body's length before it arrives (``gotLength``): the buffer is made
    that size at once and filled in place, so a 10 MB body arriving in 64 kB network reads
    peaks at one copy (kept as pieces and joined, it peaked at two). A body shorter than
    declared reads as what arrived."""
    import tracemalloc

    from backend.config.daphne_body import Body

    source = bytes(range(256)) * 40_000  # 10.24 MB, written as views: no copies of its own
    view = memoryview(source)
    tracemalloc.start()
    try:
        body = Body(limit=len(source), declared=len(source))
        for at in range(0, len(source), 65536):
            body.write(view[at : at + 65536])
        whole = body.read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert whole == source and body.read() == b""
    body.seek(0)
    assert body.read() is whole
    assert peak < 1.05 * len(source), peak
    short = Body(limit=100, declared=50)
    short.write(b"only this")
    assert short.read() == b"only this" and short.tell() == 9
    over = Body(limit=100, declared=101)  # a declared length over the limit is not allocated
    assert over.read() == b""


def test_multipart_payloads_are_views_of_the_body_not_copies():
    from backend.dicomweb import multipart

    body = b"--b\r\nContent-Type: application/dicom\r\n\r\nFIRST\r\n--b\r\n\r\nSECOND\r\n--b--\r\n"
    parts = list(multipart.parts(body, "b"))
    assert [bytes(p) for _, p in parts] == [b"FIRST", b"SECOND"]
    assert all(isinstance(p, memoryview) and p.obj is body for _, p in parts)
    assert parts[0][0] == {"content-type": "application/dicom"}
