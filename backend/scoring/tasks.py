from __future__ import annotations

import logging

from celery import shared_task

from backend.jobs.tasks import TrackedTask
from backend.scoring.seg import seg_store
from backend.scoring.services import series_score, series_unscored_count

logger = logging.getLogger(__name__)


@shared_task(base=TrackedTask, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def series_score_task(series_id: str) -> str:
    run = series_score(series_id=series_id)
    if run is None:
        return ""
    # The DICOM SEG is derived: rebuilt once the waiting slices are all scored, never blocking.
    if series_unscored_count(series_id=series_id, run=run) == 0:
        try:
            seg_store(run)
        except Exception:
            logger.exception("the SEG of run %s could not be built", run.pk)
    return str(run.pk)
