"""Celery tasks of the annotation app: ids in, one service call. Both need the model, so callers
send them to the ``gpu`` queue (``QUEUE``)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from backend.jobs.services import BUSY_RETRY_S, JobBusy
from backend.jobs.tasks import TRANSIENT_ERRORS, TrackedTask

QUEUE = "gpu"


@shared_task(bind=True, base=TrackedTask, time_limit=settings.ARTISCAN_FINETUNE_TIME_LIMIT_S)
def finetune_task(self: Any, finetune_id: str) -> str:
    from annotation.training import finetune_run

    try:
        return str(finetune_run(finetune_id=finetune_id).status)
    except JobBusy as busy:
        # A redelivery (the run outlived the visibility timeout) while the first delivery still
        # trains: look again later rather than end, which would record the task done.
        raise self.retry(exc=busy, countdown=BUSY_RETRY_S, max_retries=None) from None


@shared_task(ignore_result=True, acks_on_timeout=True)
def finetune_requeue_task() -> int:
    """Periodic (Celery beat, ``CELERY_BEAT_SCHEDULE``): hand again to a worker each queued
    fine-tuning whose message the broker lost (``finetune_requeue_lost``)."""
    from annotation.training import finetune_requeue_lost

    return len(finetune_requeue_lost())


# The one task whose caller waits for its result (the annotate page's AI assist): results are
# ignored by default (CELERY_TASK_IGNORE_RESULT), so this one keeps its own.
@shared_task(base=TrackedTask, autoretry_for=TRANSIENT_ERRORS, max_retries=3, ignore_result=False)
def slice_assist_task(instance_id: str) -> dict[str, list[int]]:
    from annotation.assist import slice_model_masks
    from annotation.rle import rle_encode

    return {
        name: rle_encode(mask) for name, mask in slice_model_masks(instance_id=instance_id).items()
    }
