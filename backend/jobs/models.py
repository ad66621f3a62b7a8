"""Our own record of every Celery task execution attempt.

Celery is at-least-once and requeues a task whose worker died regardless of the redelivered
flag, so a task that kills its worker every time would loop forever. Counting attempts here
(keyed by the Celery task id, which survives redelivery) lets us stop and quarantine it.
"""

from __future__ import annotations

from django.db import models


class JobState(models.TextChoices):
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    QUARANTINED = "quarantined", "Quarantined"


class JobRecord(models.Model):
    task_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    # Opaque ids only (a series UUID, a run UUID): never patient data.
    subject = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.RUNNING)
    attempts = models.IntegerField(default=0)
    # Attempts that ended with an error the task raised (its process lived: a retry's, which
    # Celery bounds by the task's max_retries): not counted against the attempt limit, which
    # is for deliveries that never finished (a task that kills its worker).
    failures = models.IntegerField(default=0)
    last_pid = models.IntegerField(null=True)
    last_hostname = models.CharField(max_length=200, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)

    class Meta:
        indexes = [models.Index(fields=["state", "started_at"], name="job_state")]

    def __str__(self) -> str:
        return f"{self.name} {self.subject} ({self.state}, {self.attempts} attempts)"
