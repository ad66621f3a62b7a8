"""``python manage.py dicom_scp --port 11112``: receive MR images by C-STORE."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from backend.config.startup import freeze_startup_objects
from backend.ingest.dispatch import ingest_flush
from backend.ingest.scp import serve


class Command(BaseCommand):
    help = "Run the C-STORE SCP; calling AE titles must be registered as DICOM senders."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a DICOM listener
        parser.add_argument("--port", type=int, default=11112)
        parser.add_argument("--ae-title", default="ARTISCAN")
        parser.add_argument(
            "--processes",
            type=int,
            default=1,
            help="processes accepting associations on the one port (one per core: each "
            "de-identifies on one core at a time)",
        )

    def handle(
        self, *args: Any, host: str, port: int, ae_title: str, processes: int, **options: Any
    ) -> None:
        if processes < 1:
            raise CommandError("--processes must be at least 1")
        self.stdout.write(
            f"C-STORE SCP {ae_title} listening on {host}:{port} ({processes} process(es))",
            ending="\n",
        )
        self.stdout.flush()
        freeze_startup_objects()  # before serve() forks: its processes share the frozen objects
        status = serve(host=host, port=port, ae_title=ae_title, processes=processes)
        if status:
            # An acceptor died and the others were stopped: leave at once, so a supervisor sees
            # it. What was accepted is committed; its pending announcements are handed over first
            # (bounded; the unscored sweep covers the rest). Not SystemExit: the interpreter's
            # shutdown joins library threads (associations, writer pools) and was seen to hang
            # past 30 s on a loaded machine.
            ingest_flush(timeout=5.0)
            sys.stdout.flush()
            sys.stderr.flush()
            logging.shutdown()
            os._exit(status)
