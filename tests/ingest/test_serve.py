"""``manage.py serve``: several daphne processes answer on one port (STOW-RS included), and when
one of them dies the command exits with an error, so a supervisor notices."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import _free_port, _listening_process, _server_env, _wait_for
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@contextlib.contextmanager
def _serve_two(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    """``manage.py serve --workers 2`` on a free port, both daphne processes listening."""
    from django.conf import settings

    port = _free_port()
    env = _server_env(settings.DATABASES["default"]["NAME"])
    command = [sys.executable, "manage.py", "serve", "--port", str(port), "--workers", "2"]
    log = tmp_path / "serve.log"
    with _listening_process(command, env=env, port=port, log=log, what="serve") as proc:
        _wait_for(lambda: len(_children(proc.pid)) == 2, 30, "two daphne processes")
        _wait_for(lambda: log.read_text().count("Listening on TCP address") == 2, 60, "both up")
        # Each loaded the application and froze it out of garbage collection before serving.
        assert log.read_text().count("frozen out of garbage collection") == 2
        yield proc, port, log


def test_two_daphne_processes_serve_one_port_and_a_dead_one_stops_the_command(operator_a, tmp_path):
    from django.conf import settings

    with _serve_two(tmp_path) as (proc, port, log):
        workers = _children(proc.pid)

        boundary = "servetest"
        body = b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + to_bytes(mr_dataset(i)) + b"\r\n"
            for i in (1, 2, 3)
        ) + f"--{boundary}--\r\n".encode()  # fmt: skip
        headers = {
            "Authorization": f"Bearer {operator_a.token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        }
        for _ in range(4):  # new connections: the kernel gives each to either process
            r = requests.post(
                f"http://127.0.0.1:{port}/dicomweb/studies", data=body, headers=headers, timeout=60
            )
            assert r.status_code == 200, r.text[:300]
            assert len(r.json()["00081199"]["Value"]) == 3

        for pid in workers:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            # Freed request bodies go back to the system (a fixed mmap threshold, 1 MiB).
            assert b"MALLOC_MMAP_THRESHOLD_=1048576" in environ
            if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
                # Each daphne process borrows PostgreSQL connections from a pool of its own.
                assert b"ARTISCAN_DB_POOL_SIZE=8" in environ

        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.returncode not in (None, 0)
        assert "a daphne process exited" in log.read_text()
        assert not Path(f"/proc/{workers[1]}").exists() or _zombie(workers[1])


def _zombie(pid: int) -> bool:
    try:
        return " Z " in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True


def _accepted_by(pid: int, port: int) -> int:
    """How many connections to ``port`` process ``pid`` has accepted (its open sockets that
    are the server side of an established connection to that port)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01" and fields[9] != "0":  # ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            held += os.readlink(fd) in inodes
        except OSError:
            continue
    return held


def test_clients_connecting_together_are_shared_among_the_processes(tmp_path):
    """Four clients that connect while both processes are asleep: Twisted accepted up to a
    hundred connections per wake-up, so the first process awake took all four and the other
    core idled through a four-client STOW-RS; each process now accepts one per wake-up."""
    with _serve_two(tmp_path) as (proc, port, _log):
        workers = _children(proc.pid)
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        clients = []
        try:
            for _ in range(4):  # all four wait in the backlog
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        try:
            _wait_for(
                lambda: sum(_accepted_by(pid, port) for pid in workers) == 4, 30, "all accepted"
            )
            held = sorted(_accepted_by(pid, port) for pid in workers)
            assert held[0] >= 1, held  # not all four in one process
        finally:
            for client in clients:
                client.close()
