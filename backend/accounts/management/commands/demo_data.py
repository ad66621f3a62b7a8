"""``python manage.py demo_data``: two demo sites and one user per role (passwords printed once),
plus weeks of SYNTHETIC scored history for the quality dashboards (``--no-history`` to skip).
Idempotent: existing users, sites and history are left alone."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from tqdm import tqdm

from backend.accounts.models import Role, Site, User
from backend.accounts.services import site_create, user_create

DEMO_SITE = ("Demo University Hospital", "demo")
# A second site, so that the dashboards show two sites and the site scoping can be seen.
DEMO_SITE_B = ("Demo Community Clinic", "demo-b")
DEMO_USERS: list[tuple[str, Role | None, str]] = [
    ("radiologist", Role.RADIOLOGIST, "demo"),
    ("operator", Role.OPERATOR, "demo"),
    ("annotator", Role.ANNOTATOR, "demo"),
    ("lead", Role.ANNOTATION_LEAD, "demo"),
    ("siteadmin", Role.SITE_ADMIN, "demo"),
    ("siteadmin_b", Role.SITE_ADMIN, "demo-b"),
    ("superuser", None, ""),
]


class Command(BaseCommand):
    help = (
        "Create the demo sites, one user per role (existing ones are left alone) and the "
        "synthetic dashboard history."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--reset-passwords",
            action="store_true",
            help="Give the existing demo users new passwords and print them.",
        )
        parser.add_argument(
            "--no-history",
            action="store_true",
            help="Do not generate the synthetic weeks of scored series for the dashboards.",
        )
        parser.add_argument(
            "--no-images",
            action="store_true",
            help="Do not ingest the demo brain series (real anatomy with simulated artifacts).",
        )
        parser.add_argument("--weeks", type=int, default=16, help="Weeks of synthetic history.")

    def handle(
        self,
        *args: Any,
        reset_passwords: bool = False,
        no_history: bool = False,
        no_images: bool = False,
        weeks: int = 16,
        **options: Any,
    ) -> None:
        sites, printed = self._sites_and_users(reset_passwords)
        self.stdout.write(f"Sites: {', '.join(s.name for s in sites.values())}")
        self.stdout.write("Demo logins (passwords are shown only now):")
        for username, role_label, password in printed:
            self.stdout.write(f"  {username:<12} {role_label:<34} {password}")
        if not no_images:
            from backend.ingest.demo_series import DEMO_SERIES, demo_series_ingest

            accepted = demo_series_ingest(site=sites["demo"])
            self.stdout.write(
                f"Demo images: {len(DEMO_SERIES)} brain series ({accepted} new instances), "
                "queued for scoring."
            )
        if not no_history:
            self._history(sites["demo"], sites["demo-b"], weeks)

    @transaction.atomic
    def _sites_and_users(
        self, reset_passwords: bool
    ) -> tuple[dict[str, Site], list[tuple[str, str, str]]]:
        sites = {}
        for name, slug in (DEMO_SITE, DEMO_SITE_B):
            sites[slug] = Site.objects.filter(slug=slug).first() or site_create(
                name=name, slug=slug
            )
        printed = []
        for username, role, slug in DEMO_USERS:
            password = secrets.token_urlsafe(12)
            user = User.objects.filter(username=username).first()
            if user is None:
                memberships = [(sites[slug], role)] if role is not None else []
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
            label = f"{role.label} · {sites[slug].name}" if role else "Superuser (all sites)"
            printed.append((username, label, password))
        return sites, printed

    def _history(self, site_a: Site, site_b: Site, weeks: int) -> None:
        from backend.dashboards.demo import demo_history_create, history_exists
        from backend.dashboards.services import rollups_refresh

        if history_exists(site_a) or history_exists(site_b):
            self.stdout.write("Synthetic dashboard history: already there (left alone).")
            return
        bar = tqdm(total=0, desc="synthetic history", unit="scanner-week", file=self.stderr._out)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        count = demo_history_create(site_a=site_a, site_b=site_b, weeks=weeks, progress=progress)
        bar.close()
        result = rollups_refresh(full=True)
        self.stdout.write(
            f"Synthetic dashboard history: {count} scored series over {weeks} weeks, two sites, "
            f"three scanners (marked SYNTHETIC DEMO HISTORY); {len(result.alerts)} alert(s)."
        )
        for alert in result.alerts:
            self.stdout.write(
                f"  alert: {alert.metric} on {alert.scanner} in the week of {alert.week}: "
                f"{alert.count}/{alert.total} vs {alert.baseline_rate:.1%} before"
            )
