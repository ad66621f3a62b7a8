"""The base class of every ArtiScan Celery task."""

from __future__ import annotations

import logging
from typing import Any

import celery
import kombu.exceptions
import redis.exceptions
from django import db

from backend.config.connections import forget_handled_errors
from backend.jobs.models import JobState
from backend.jobs.services import job_attempt_begin, job_attempt_fail, job_attempt_finish
from backend.storage.store import StoreFull

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    db.OperationalError,  # the database restarting, unreachable, refusing connections, locked
    db.InterfaceError,  # a connection the database closed under us
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,  # the broker, when a task publishes another
    StoreFull,  # the image store below its free-space floor: retried once there is room
)
"""What a task retries with a backoff (``autoretry_for``) instead of failing: an outage of the
database, Redis or the broker. None of these is a subclass of Python's own ``ConnectionError``,
which was all the tasks named, so a database outage failed the task and its message was gone."""

BEGIN_RETRIES = 12
"""Deliveries retried while the attempt cannot even be recorded (the database is away): with
the backoff below (1, 2, 4 … 60 s) about eight minutes of outage."""


class TrackedTask(celery.Task):
    """Counts attempts in the database and refuses to loop on a task that kills its worker.

    Arguments must be opaque ids (strings or ints); the first one names the job's subject.
    """

    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if not isinstance(value, (str, int)):
                raise TypeError(f"{self.name}: task arguments must be ids, got {type(value)}")
        try:
            return self._run_tracked(*args, **kwargs)
        finally:
            forget_handled_errors()

    def _run_tracked(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:
            return super().__call__(*args, **kwargs)
        subject = str(args[0]) if args else ""
        try:
            record = job_attempt_begin(
                task_id=self.request.id,
                name=self.name,
                subject=subject,
                max_attempts=self.attempt_limit(*args, **kwargs),
            )
        except TRANSIENT_ERRORS as exc:
            # Nothing ran: the database is away. Failing here acked the message and the work
            # was lost; ask for it again later (the broker holds it meanwhile).
            retries = self.request.retries or 0
            logger.warning("%s: cannot record the attempt (%s); retrying", self.name, exc)
            raise self.retry(
                exc=exc, countdown=min(60, 2**retries), max_retries=BEGIN_RETRIES
            ) from None
        if record.state in (JobState.DONE, JobState.QUARANTINED):
            return None
        try:
            result = super().__call__(*args, **kwargs)
        except Exception as exc:
            _record_quietly(job_attempt_fail, record=record, error=exc)
            raise
        _record_quietly(job_attempt_finish, record=record)
        return result

    def attempt_limit(self, *args: Any, **kwargs: Any) -> int | None:
        """Deliveries allowed before the job is quarantined; None = ``ARTISCAN_TASK_MAX_ATTEMPTS``.
        A task with finer-grained guards of its own (per-slice scoring) allows more."""
        return None


def _record_quietly(record_call: Any, **kwargs: Any) -> None:
    """Write how an attempt ended; the database being away then must not turn a task that ran
    into a failure (its record stays "running", and the next delivery, if any, counts it)."""
    try:
        record_call(**kwargs)
    except TRANSIENT_ERRORS as exc:
        logger.warning("could not record how a task attempt ended: %s", type(exc).__name__)
