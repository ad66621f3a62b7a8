"""``python manage.py serve --port 8000 --workers 2``: several daphne processes on one port.

One daphne process runs Django's sync views one at a time on one thread, so ingest (STOW-RS,
uploads) uses one core however many clients send. This command binds the listening socket
once and starts ``--workers`` daphne processes that all accept on it (``daphne --fd``); the
kernel hands each new connection to one of them, and a process that holds connections lets
an idle one take it first (``backend.config.daphne_accept``: Twisted accepted up to a hundred
at once, so four clients connecting together all went to the process that woke first, and the
other core idled). Everything else is plain daphne: the same
ASGI application, websockets included (the channel layer joins the processes). A worker that
dies takes the others down with it, so a supervisor (systemd, ``make demo``) sees the failure.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

# Runs in each child before Twisted is imported (Twisted reads LISTEN_PID at import).
_CHILD = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "if fd != 3:\n"
    "    os.dup2(fd, 3)\n"
    "    os.close(fd)\n"
    "os.environ.update(LISTEN_FDS='1', LISTEN_FDNAMES='web', LISTEN_PID=str(os.getpid()))\n"
    "import daphne.server\n"  # installs Twisted's asyncio reactor first
    "from twisted.internet import reactor\n"
    "from backend.config.daphne_accept import install\n"
    "install(reactor)\n"
    "import importlib\n"
    "importlib.import_module(sys.argv[-1].partition(':')[0])\n"  # the application's module
    "from backend.config.startup import freeze_startup_objects\n"
    "freeze_startup_objects()\n"
    "from daphne.cli import CommandLineInterface\n"
    "CommandLineInterface().run(sys.argv[2:])\n"
)


MMAP_THRESHOLD = 1024 * 1024
"""glibc's fixed mmap threshold in the daphne processes, bytes (see ``handle``)."""


class Command(BaseCommand):
    help = "Serve the ASGI application with several daphne processes sharing one listening port."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--workers",
            type=int,
            default=os.cpu_count() or 1,
            help="daphne processes (default: one per CPU)",
        )
        parser.add_argument("--application", default="backend.config.asgi:application")

    def handle(self, *args: Any, **options: Any) -> None:
        workers = options["workers"]
        if workers < 1:
            raise CommandError("--workers must be at least 1")
        family = socket.AF_INET6 if ":" in options["host"] else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((options["host"], options["port"]))
        except OSError as exc:
            where = f"{options['host']}:{options['port']}"
            raise CommandError(f"cannot listen on {where}: {exc.strerror}") from None
        listener.listen(1024)
        listener.set_inheritable(True)
        fd = listener.fileno()
        domain = "INET6" if family == socket.AF_INET6 else "INET"
        command = [sys.executable, "-c", _CHILD, str(fd), "-e", f"systemd:domain={domain}:index=0"]
        command.append(options["application"])
        # On PostgreSQL each daphne process borrows connections from a pool of its own rather
        # than opening one per request (daphne never forks, so the pool is safe there).
        env = dict(os.environ)
        if env.get("DATABASE_URL") and importlib.util.find_spec("psycopg_pool") is not None:
            env.setdefault("ARTISCAN_DB_POOL_SIZE", "8")
        # A STOW-RS request's body (up to tens of MB) and its files (~0.4 MB each) are allocated
        # and freed by the dozen. glibc raises its mmap threshold to the size of every mmapped
        # block freed, after which bodies come from the heap and their freed space stays in the
        # process: a fixed threshold gives every block above it back when freed. At 1 MiB the
        # bodies go back and a file's buffers come from the heap, reused request after request;
        # at 128 KiB each of them was a fresh mapping to fault in page by page (~0.25 ms of a
        # core per buffer). 50/request x4, embedded: peaks the same (247-251 MiB), after the
        # burst 170 -> 189 MiB; 95 fewer page faults per instance (README "Web process CPU").
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
        # The command is this interpreter and our own constant code: no untrusted input.
        children = [
            subprocess.Popen(command, pass_fds=(fd,), env=env)  # noqa: S603
            for _ in range(workers)
        ]
        listener.close()  # the children hold it now
        self.stdout.write(
            f"serving on {options['host']}:{options['port']} with {workers} daphne processes",
        )
        self.stdout.flush()

        def stop(*_: Any) -> None:
            for child in children:
                if child.poll() is None:
                    child.terminate()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
        finally:
            stop()
            for child in children:
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()
        codes = [child.returncode for child in children]
        if any(code not in (0, -signal.SIGTERM, -signal.SIGINT) for code in codes):
            raise CommandError(f"a daphne process exited with {codes}")
