"""Attempt bookkeeping for Celery tasks (see ``backend/jobs/models.py``)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import connection, transaction
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


def task_queue(task: Any) -> str:
    """The queue ``task`` is routed to (``CELERY_TASK_ROUTES``, else the default queue)."""
    from backend.config.celery import app

    return str(app.amqp.router.route({}, task.name)["queue"].name)


def queue_waiting(queue: str) -> int:
    """Messages waiting in a broker queue, not yet taken by a worker."""
    from backend.config.celery import app

    with app.connection_for_write() as conn:
        return int(conn.default_channel.queue_declare(queue=queue).message_count)


def lost_jobs_requeue(*, task: Any, queue: str, subjects: Iterable[str]) -> list[str]:
    """Publish ``task`` again for each of ``subjects`` (jobs that their own rows say are still
    queued) whose message no worker ever took: no attempt of ``task`` on the subject is
    recorded (``JobRecord``), and ``queue`` is empty, so the message is not waiting there either.
    Such a message was lost in the broker: a Redis restarted without its append-only file, a
    purge (security checklist C-06). A job a worker took and then lost is the broker's to deliver
    again (late acknowledgement) and is left alone. Returns the subjects published again.

    With messages waiting, nothing is published: the workers are behind, and a job queued
    behind them would run twice."""
    subjects = list(subjects)
    if not subjects or queue_waiting(queue):
        return []
    started = set(
        JobRecord.objects.filter(name=task.name, subject__in=subjects).values_list(
            "subject", flat=True
        )
    )
    lost = [subject for subject in subjects if subject not in started]
    for subject in lost:
        task.apply_async(args=[subject], queue=queue)
    if lost:
        logger.warning("published %d lost %s jobs again", len(lost), task.name)
    return lost


class JobBusy(Exception):
    """Another delivery of this job holds its lock (``job_lock``) and is running it right now.
    The task asks to be run again later (``self.retry``) rather than ending: ending would record
    the task done, and if the running delivery then died nothing would run the job again."""


BUSY_RETRY_S = 300
"""Seconds before a delivery that found its job busy tries again."""


def job_lock_key(job_id: uuid.UUID | str) -> int:
    """The PostgreSQL advisory lock a worker holds while it runs the job ``job_id`` (a UUID)."""
    return uuid.UUID(str(job_id)).int & (2**63 - 1)


@contextmanager
def job_lock(job_id: uuid.UUID | str) -> Iterator[bool]:
    """Whether this worker may run the job: a session advisory lock held while it runs.

    Celery delivers a task again when it outlives the broker's visibility timeout while the
    first delivery still runs, and a lost message is published again (``lost_jobs_requeue``);
    that second delivery must leave the job alone. A status check cannot tell it from a
    redelivery after the first worker died (status "running" either way); the lock can, since
    PostgreSQL drops it with the dead worker's connection. Elsewhere (SQLite, one worker
    process) always True.
    """
    if connection.vendor != "postgresql":
        yield True
        return
    key = job_lock_key(job_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        ours = bool(cursor.fetchone()[0])
    try:
        yield ours
    finally:
        if ours:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
