"""``python manage.py quarantine_purge``: delete refused originals older than
``ARTISCAN_QUARANTINE_DAYS``, uploads abandoned half-way and uploads whose processing will not
finish; Celery beat runs the same every ``ARTISCAN_PURGE_EVERY_S`` (``ingest-purge``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from backend.ingest.services import quarantine_purge
from backend.ingest.uploads import upload_fail_stuck, upload_purge_stale


class Command(BaseCommand):
    help = "Delete quarantined originals past their expiry."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"{quarantine_purge()} quarantined files deleted")
        self.stdout.write(f"{upload_purge_stale()} uploads abandoned for 48 h deleted")
        self.stdout.write(f"{upload_fail_stuck()} uploads whose processing will not finish ended")
