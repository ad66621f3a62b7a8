from __future__ import annotations

from celery import shared_task

from backend.ingest.uploads import upload_process
from backend.jobs.tasks import TrackedTask


@shared_task(base=TrackedTask, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def upload_process_task(upload_id: str) -> str:
    return str(upload_process(upload_id=upload_id).status)
