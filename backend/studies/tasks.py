from __future__ import annotations

from celery import shared_task

from backend.jobs.tasks import TRANSIENT_ERRORS, TrackedTask
from backend.studies.services import series_summarize


@shared_task(base=TrackedTask, autoretry_for=TRANSIENT_ERRORS, retry_backoff=True, max_retries=5)
def series_summarize_task(series_id: str) -> int:
    return series_summarize(series_id=series_id).instance_count
