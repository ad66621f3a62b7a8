"""``python manage.py demo_data``: a demo site and one user per role, passwords printed once."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from backend.accounts.models import Role, Site, User
from backend.accounts.services import site_create, user_create

DEMO_SITE = ("Demo University Hospital", "demo")
DEMO_USERS: list[tuple[str, Role | None]] = [
    ("radiologist", Role.RADIOLOGIST),
    ("operator", Role.OPERATOR),
    ("annotator", Role.ANNOTATOR),
    ("lead", Role.ANNOTATION_LEAD),
    ("siteadmin", Role.SITE_ADMIN),
    ("superuser", None),
]


class Command(BaseCommand):
    help = "Create the demo site and one user per role (existing ones are left alone)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--reset-passwords",
            action="store_true",
            help="Give the existing demo users new passwords and print them.",
        )

    @transaction.atomic
    def handle(self, *args: Any, reset_passwords: bool = False, **options: Any) -> None:
        name, slug = DEMO_SITE
        site = Site.objects.filter(slug=slug).first() or site_create(name=name, slug=slug)
        printed = []
        for username, role in DEMO_USERS:
            password = secrets.token_urlsafe(12)
            user = User.objects.filter(username=username).first()
            if user is None:
                memberships = [(site, role)] if role is not None else []
                user_create(
                    username=username,
                    password=password,
                    memberships=memberships,
                    is_superuser=role is None,
                )
            elif reset_passwords:
                user.set_password(password)
                user.save(update_fields=["password"])
            else:
                password = "(unchanged)"  # noqa: S105 - a label, not a password
            printed.append((username, role.label if role else "Superuser (all sites)", password))
        self.stdout.write(f"Site: {site.name}")
        self.stdout.write("Demo logins (passwords are shown only now):")
        for username, role_label, password in printed:
            self.stdout.write(f"  {username:<12} {role_label:<24} {password}")
