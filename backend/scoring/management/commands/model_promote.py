"""Deploy a registered model version: ``manage.py model_promote NAME VERSION --reason "..."``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backend.scoring.management.commands._common import acting_user
from backend.scoring.services import ModelRegistryError, model_promote, model_version_find


class Command(BaseCommand):
    help = "Deploy a registered model version (recorded with who, the previous version and why)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("version")
        parser.add_argument("--reason", required=True)
        parser.add_argument("--user", help="username recorded as the promoter")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            version = model_version_find(label=options["version"], name=options["name"])
            promotion = model_promote(
                model_version=version, user=acting_user(options["user"]), reason=options["reason"]
            )
        except ModelRegistryError as exc:
            raise CommandError(str(exc)) from None
        previous = promotion.previous or "nothing"
        self.stdout.write(f"deployed {promotion.model_version} (was {previous})")
