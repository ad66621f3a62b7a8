"""Attempt bookkeeping for Celery tasks (see ``backend/jobs/models.py``)."""

from __future__ import annotations

import logging
import os
import socket

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from backend.jobs.models import JobRecord, JobState

logger = logging.getLogger(__name__)


@transaction.atomic
def job_attempt_begin(
    *, task_id: str, name: str, subject: str, max_attempts: int | None = None
) -> JobRecord:
    """Count one more attempt. Past ``max_attempts`` (default ``ARTISCAN_TASK_MAX_ATTEMPTS``)
    deliveries that did not finish — the attempts minus those that ended in an error the task
    raised (``job_attempt_fail``: a retry keeps its task id, and its attempts are Celery's
    ``max_retries`` to bound) — the job is quarantined and the caller must not run it again."""
    limit = settings.CELERY_MAX_ATTEMPTS if max_attempts is None else max_attempts
    record, _ = JobRecord.objects.select_for_update().get_or_create(
        task_id=task_id, defaults={"name": name, "subject": subject}
    )
    if record.state in (JobState.DONE, JobState.QUARANTINED):
        return record
    record.attempts += 1
    record.last_pid = os.getpid()
    record.last_hostname = socket.gethostname()[:200]
    record.started_at = timezone.now()
    if record.attempts - record.failures > limit:
        record.state = JobState.QUARANTINED
        unfinished = record.attempts - record.failures - 1
        record.error = f"gave up after {unfinished} attempts that did not finish"
        logger.error("job quarantined: %s %s (task %s)", name, subject, task_id)
    else:
        record.state = JobState.RUNNING
    record.save()
    return record


def job_attempt_finish(*, record: JobRecord) -> None:
    JobRecord.objects.filter(pk=record.pk).update(
        state=JobState.DONE, finished_at=timezone.now(), error=""
    )


def job_attempt_fail(*, record: JobRecord, error: BaseException) -> None:
    # Only the exception class: messages can quote file contents.
    JobRecord.objects.filter(pk=record.pk).update(
        state=JobState.FAILED,
        finished_at=timezone.now(),
        error=type(error).__name__[:500],
        failures=F("failures") + 1,
    )
