"""The base class of every ArtiScan Celery task."""

from __future__ import annotations

from typing import Any

import celery

from backend.config.connections import forget_handled_errors
from backend.jobs.models import JobState
from backend.jobs.services import job_attempt_begin, job_attempt_fail, job_attempt_finish


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
        record = job_attempt_begin(
            task_id=self.request.id,
            name=self.name,
            subject=subject,
            max_attempts=self.attempt_limit(*args, **kwargs),
        )
        if record.state in (JobState.DONE, JobState.QUARANTINED):
            return None
        try:
            result = super().__call__(*args, **kwargs)
        except Exception as exc:
            job_attempt_fail(record=record, error=exc)
            raise
        job_attempt_finish(record=record)
        return result

    def attempt_limit(self, *args: Any, **kwargs: Any) -> int | None:
        """Deliveries allowed before the job is quarantined; None = ``ARTISCAN_TASK_MAX_ATTEMPTS``.
        A task with finer-grained guards of its own (per-slice scoring) allows more."""
        return None
