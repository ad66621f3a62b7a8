"""``python manage.py dicom_sender SITE AE_TITLE [--host IP]``: allow a modality or PACS to send."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from backend.accounts.models import Site
from backend.ingest.models import DicomSender


class Command(BaseCommand):
    help = "Register (or update) a DICOM sender: its AE title, its site and optionally its host."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("site", help="site slug")
        parser.add_argument("ae_title")
        parser.add_argument("--host", default=None, help="accept this AE only from this address")

    def handle(
        self, *args: Any, site: str, ae_title: str, host: str | None, **options: Any
    ) -> None:
        if not 0 < len(ae_title.strip()) <= 16:
            raise CommandError("AE titles have 1 to 16 characters")
        target = Site.objects.filter(slug=site).first()
        if target is None:
            raise CommandError(f"no site with slug {site!r}")
        sender, created = DicomSender.objects.update_or_create(
            ae_title=ae_title.strip(), defaults={"site": target, "host": host, "is_active": True}
        )
        self.stdout.write(f"{'added' if created else 'updated'} {sender}")
