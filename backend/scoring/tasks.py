from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from backend.jobs.tasks import TRANSIENT_ERRORS, TrackedTask
from backend.scoring.models import ModelVersion
from backend.scoring.services import (
    SlicesPending,
    rescore_job_refresh,
    run_seg_refresh,
    scoring_attempt_budget,
    series_score,
)

logger = logging.getLogger(__name__)


class ScoringTask(TrackedTask):
    abstract = True

    def attempt_limit(self, *args: Any, **kwargs: Any) -> int | None:
        # Slices carry their own attempt counts (a poison slice is quarantined, the rest of the
        # series goes on): the task may take as many deliveries as its slices' budgets add up to.
        return scoring_attempt_budget(series_id=args[0])


@shared_task(
    base=ScoringTask,
    bind=True,
    autoretry_for=(*TRANSIENT_ERRORS, SlicesPending),
    retry_backoff=1,
    retry_backoff_max=30,
    max_retries=None,  # bounded by the attempt budget above
    # Results live in the database (runs, JobRecord): no result-backend writes (STARTED and
    # SUCCESS, two commits per slice on the embedded SQLite backend) on the verdict's path.
    ignore_result=True,
)
def series_score_task(
    self: ScoringTask, series_id: str, model_version_id: int = 0, rescore_job_id: str = ""
) -> str:
    version = ModelVersion.objects.get(pk=model_version_id) if model_version_id else None
    run = series_score(series_id=series_id, model_version=version, claimant=self.request.id or "")
    if rescore_job_id:
        rescore_job_refresh(job_id=rescore_job_id)
    # The DICOM SEG is derived: the write asked the cpu queue for it (run_seg_schedule).
    return "" if run is None else str(run.pk)


@shared_task(
    base=TrackedTask,
    bind=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=1,
    ignore_result=True,
)
def run_seg_task(self: TrackedTask, run_id: str, scored: int) -> str:
    try:
        built = run_seg_refresh(run_id=run_id, scored=scored)
    except TRANSIENT_ERRORS:
        raise  # the database or the store away for a moment: retried (autoretry_for)
    except Exception:
        # Derived data: a SEG that cannot be built (e.g. sources without a frame of reference)
        # must not put the job in a retry loop; the results themselves are stored.
        logger.exception("the SEG of run %s could not be built", run_id)
        return ""
    return ",".join(str(instance.pk) for instance in built or [])
