"""Register a weight file: ``manage.py model_register PATH --name N --version V``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backend.scoring.management.commands._common import acting_user
from backend.scoring.services import ModelRegistryError, model_version_register


class Command(BaseCommand):
    help = "Register a .keras/.onnx weight file as a model version (not deployed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--name", required=True)
        parser.add_argument("--version", dest="model_version", required=True)
        parser.add_argument("--metrics", default="{}", help="JSON object of figures")
        parser.add_argument("--card", type=Path, help="model card (Markdown) file")
        parser.add_argument("--user", help="username recorded as the registrant")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            metrics = json.loads(options["metrics"])
            version = model_version_register(
                weights_path=options["path"],
                name=options["name"],
                version=options["model_version"],
                metrics=metrics if isinstance(metrics, dict) else {},
                card=options["card"].read_text() if options["card"] else "",
                registered_by=acting_user(options["user"]),
            )
        except (ModelRegistryError, json.JSONDecodeError, OSError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"registered {version} (sha256 {version.sha256[:12]})")
