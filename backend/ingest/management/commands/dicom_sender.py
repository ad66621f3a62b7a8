"""``python manage.py dicom_sender SITE AE_TITLE (--host IP | --any-host)``: allow a modality or
PACS to send, from its address (or, on a trusted network, from any)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_ipv46_address

from backend.accounts.models import Site
from backend.ingest.models import DicomSender


class Command(BaseCommand):
    help = "Register (or update) a DICOM sender: its AE title, its site and its host."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("site", help="site slug")
        parser.add_argument("ae_title")
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--host", default=None, help="accept this AE only from this address")
        where.add_argument(
            "--any-host",
            action="store_true",
            help="accept this AE from any address (a trusted network only: anyone can claim "
            "an AE title)",
        )

    def handle(
        self,
        *args: Any,
        site: str,
        ae_title: str,
        host: str | None,
        any_host: bool,
        **options: Any,
    ) -> None:
        if not 0 < len(ae_title.strip()) <= 16:
            raise CommandError("AE titles have 1 to 16 characters")
        target = Site.objects.filter(slug=site).first()
        if target is None:
            raise CommandError(f"no site with slug {site!r}")
        if host is not None:
            try:
                validate_ipv46_address(host)
            except ValidationError:
                raise CommandError(f"--host takes an IP address, not {host!r}") from None
        sender, created = DicomSender.objects.update_or_create(
            ae_title=ae_title.strip(),
            defaults={"site": target, "host": host, "any_host": any_host, "is_active": True},
        )
        where = "any host" if any_host else host
        self.stdout.write(f"{'added' if created else 'updated'} {sender}, from {where}")
