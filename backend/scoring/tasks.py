from __future__ import annotations

from celery import shared_task

from backend.jobs.tasks import TrackedTask
from backend.scoring.services import series_score


@shared_task(base=TrackedTask, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def series_score_task(series_id: str) -> str:
    run = series_score(series_id=series_id)
    return str(run.pk) if run else ""
