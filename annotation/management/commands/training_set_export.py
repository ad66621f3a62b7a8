"""``manage.py training_set_export CAMPAIGN_ID --lead USERNAME [--simulated 0.3] [--seed 0]``:
export a campaign's next training-set version from the command line, with a progress bar."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Campaign
from annotation.services import training_set_export_audit
from annotation.training import training_set_export
from backend.accounts.models import User


class Command(BaseCommand):
    help = "Export a campaign's adjudicated readings as a new immutable training-set version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign_id")
        parser.add_argument("--lead", required=True, help="the annotation lead exporting it")
        parser.add_argument("--simulated", type=float, default=0.0, help="simulated share, 0-0.95")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--quiet", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        from django.core.exceptions import PermissionDenied, ValidationError
        from tqdm import tqdm

        campaign = Campaign.objects.filter(pk=options["campaign_id"]).first()
        user = User.objects.filter(username=options["lead"]).first()
        if campaign is None or user is None:
            raise CommandError("no such campaign or user")
        bar = tqdm(total=0, unit="slice", disable=options["quiet"], desc="annotated slices")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            ts = training_set_export(
                user=user,
                campaign=campaign,
                simulated_ratio=options["simulated"],
                seed=options["seed"],
                progress=progress,
            )
        except (PermissionDenied, ValidationError) as exc:
            raise CommandError(str(exc)) from None
        finally:
            bar.close()
        # The same audit rows as the API's export, with no address (not a request).
        training_set_export_audit(user=user, campaign=campaign)
        split = ", ".join(f"{s} {ts.annotated_slices.get(s, 0)}" for s in ("train", "val", "test"))
        self.stdout.write(
            f"training set v{ts.version}: {sum(ts.annotated_slices.values())} annotated slices "
            f"({split}) + {ts.simulated_slices} simulated, sha256 {ts.sha256} -> {ts.path}"
        )
