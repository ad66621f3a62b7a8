from __future__ import annotations

from typing import Any

from celery import shared_task

from backend.ingest.services import quarantine_purge, unscored_sweep
from backend.ingest.uploads import (
    upload_fail_stuck,
    upload_process,
    upload_purge_stale,
    upload_requeue_lost,
)
from backend.jobs.services import BUSY_RETRY_S, JobBusy
from backend.jobs.tasks import TRANSIENT_ERRORS, TrackedTask
from backend.storage.store import StoreFull


@shared_task(
    bind=True, base=TrackedTask, autoretry_for=TRANSIENT_ERRORS, retry_backoff=True, max_retries=5
)
def upload_process_task(self: Any, upload_id: str) -> str:
    try:
        return str(upload_process(upload_id=upload_id).status)
    except (JobBusy, StoreFull) as wait:
        # Another delivery is processing it, or the store is full: not a failure, and not for
        # the five quick retries of an outage. Again in five minutes, for as long as it takes
        # (an upload waiting ARTISCAN_UPLOAD_STUCK_H hours is failed by the purge).
        raise self.retry(exc=wait, countdown=BUSY_RETRY_S, max_retries=None) from None


@shared_task(ignore_result=True, acks_on_timeout=True)
def unscored_sweep_task() -> int:
    """Periodic (Celery beat, ``CELERY_BEAT_SCHEDULE``): re-ask for the scoring of series whose
    slices were accepted but not scored (a request lost after the commit)."""
    return len(unscored_sweep())


@shared_task(ignore_result=True, acks_on_timeout=True)
def upload_requeue_task() -> int:
    """Periodic (Celery beat, ``CELERY_BEAT_SCHEDULE``): hand again to a worker each queued
    upload whose message the broker lost (``upload_requeue_lost``)."""
    return len(upload_requeue_lost())


@shared_task(ignore_result=True, acks_on_timeout=True)
def ingest_purge_task() -> int:
    """Periodic (Celery beat, ``CELERY_BEAT_SCHEDULE``): refused originals past
    ``ARTISCAN_QUARANTINE_DAYS``, uploads abandoned half-way, and uploads whose processing will
    not finish (their original chunks) are deleted; what ``manage.py quarantine_purge`` does."""
    return quarantine_purge() + upload_purge_stale() + upload_fail_stuck()
