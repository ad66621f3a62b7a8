"""Re-score series on demand: ``manage.py rescore [--site ID] [--since DATE] [--model VERSION]``.

Enqueues one scoring task per MR series on the gpu queue and shows a progress bar until every
series is scored (``--no-wait`` returns at once; the job's progress stays in the database).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from backend.scoring.management.commands._common import acting_user
from backend.scoring.services import (
    ModelRegistryError,
    model_version_find,
    rescore_job_refresh,
    series_rescore,
)
from backend.studies.models import Series


class Command(BaseCommand):
    help = "Re-score MR series with the deployed (or a given) model version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--site", type=int, help="only this site's series (site id)")
        parser.add_argument(
            "--since", type=dt.date.fromisoformat, help="only series received on or after"
        )
        parser.add_argument("--model", help="model version (default: the deployed one)")
        parser.add_argument("--no-wait", action="store_true", help="enqueue and return")
        parser.add_argument("--timeout", type=float, default=0, help="give up waiting (s)")
        parser.add_argument("--user", help="username recorded as the requester")

    def handle(self, *args: Any, **options: Any) -> None:
        series = Series.objects.filter(modality="MR")
        if options["site"] is not None:
            series = series.filter(site_id=options["site"])
        if options["since"] is not None:
            series = series.filter(received_at__date__gte=options["since"])
        try:
            version = model_version_find(label=options["model"]) if options["model"] else None
        except ModelRegistryError as exc:
            raise CommandError(str(exc)) from None
        job = series_rescore(
            series_ids=list(series.order_by("received_at").values_list("pk", flat=True)),
            model_version=version,
            requested_by=acting_user(options["user"]),
        )
        self.stdout.write(f"rescore {job.pk}: {job.total} series with {job.model_version}")
        if options["no_wait"] or job.total == 0:
            return
        deadline = time.monotonic() + options["timeout"] if options["timeout"] else None
        with tqdm(total=job.total, unit="series", file=self.stderr._out) as bar:
            while True:
                job = rescore_job_refresh(job_id=job.pk)
                bar.update(job.done - bar.n)
                if job.finished_at is not None:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise CommandError(f"{job.done} of {job.total} series scored; still running")
                time.sleep(0.5)
        self.stdout.write(f"done: {job.done} of {job.total} series scored")
