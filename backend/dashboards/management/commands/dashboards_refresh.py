"""``python manage.py dashboards_refresh [--full]``: what the beat task does, by hand, with a
progress bar (one step per site-week rebuilt)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from tqdm import tqdm

from backend.dashboards.services import rollups_refresh


class Command(BaseCommand):
    help = "Rebuild the quality rollups changed since the last refresh (all with --full)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--full", action="store_true", help="Rebuild every site-week.")
        parser.add_argument(
            "--no-alerts", action="store_true", help="Do not test the rebuilt weeks for alerts."
        )

    def handle(self, *args: Any, full: bool = False, no_alerts: bool = False, **opts: Any) -> None:
        bar = tqdm(total=0, unit="site-week", desc="rollups", file=self.stderr._out)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = rollups_refresh(full=full, progress=progress, evaluate_alerts=not no_alerts)
        bar.close()
        self.stdout.write(
            f"{result.site_weeks} site-weeks rebuilt into {result.cells} cells; "
            f"{len(result.alerts)} new alert(s)."
        )
        for alert in result.alerts:
            self.stdout.write(
                f"  alert: {alert.metric} on {alert.scanner or 'unknown scanner'} in week "
                f"{alert.week}: {alert.count}/{alert.total} vs {alert.baseline_rate:.1%} "
                f"(p={alert.p_value:.2g})"
            )
