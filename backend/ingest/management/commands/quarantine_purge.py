"""``python manage.py quarantine_purge``: delete refused originals older than
``ARTISCAN_QUARANTINE_DAYS`` (run it daily, e.g. from cron or Celery beat)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from backend.ingest.services import quarantine_purge


class Command(BaseCommand):
    help = "Delete quarantined originals past their expiry."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"{quarantine_purge()} quarantined files deleted")
