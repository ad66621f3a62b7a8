"""``python manage.py orthanc_follow [--once] [--interval S]``: follow every active Orthanc
source's change feed and ingest its stable series."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand

from backend.ingest.models import OrthancSource
from backend.ingest.orthanc import OrthancError
from backend.ingest.services import orthanc_poll
from backend.storage.store import StoreFull


class Command(BaseCommand):
    help = "Ingest the stable series of every active Orthanc source, then keep following."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="one pass, then exit")
        parser.add_argument("--interval", type=float, default=5.0, help="seconds between passes")

    def handle(self, *args: Any, once: bool, interval: float, **options: Any) -> None:
        while True:
            for source in OrthancSource.objects.filter(is_active=True).select_related("site"):
                try:
                    result = orthanc_poll(source=source)
                except (OrthancError, StoreFull) as exc:
                    self.stderr.write(f"{source.url}: {exc}")
                    continue
                if result.series:
                    accepted = sum(o.status == "accepted" for o in result.outcomes)
                    self.stdout.write(
                        f"{source.url}: {result.series} series, {accepted} new instances"
                    )
            if once:
                return
            time.sleep(interval)
