"""Celery tasks of the annotation app: ids in, one service call, on the ``gpu`` queue."""

from __future__ import annotations

from celery import shared_task

from backend.jobs.tasks import TrackedTask


@shared_task(base=TrackedTask, queue="gpu")
def finetune_task(finetune_id: str) -> str:
    from annotation.training import finetune_run

    return str(finetune_run(finetune_id=finetune_id).status)


@shared_task(base=TrackedTask, queue="gpu", autoretry_for=(ConnectionError,), max_retries=3)
def slice_assist_task(instance_id: str) -> dict[str, list[int]]:
    from annotation.assist import slice_model_masks
    from annotation.rle import rle_encode

    return {
        name: rle_encode(mask) for name, mask in slice_model_masks(instance_id=instance_id).items()
    }
