"""Deploy again the previously deployed model: ``manage.py model_rollback --reason "..."``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backend.scoring.management.commands._common import acting_user
from backend.scoring.services import ModelRegistryError, model_rollback


class Command(BaseCommand):
    help = "Deploy again the model version that was deployed before the current one."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reason", required=True)
        parser.add_argument("--user", help="username recorded as the one who rolled back")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            promotion = model_rollback(user=acting_user(options["user"]), reason=options["reason"])
        except ModelRegistryError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"deployed {promotion.model_version} again (was {promotion.previous})")
