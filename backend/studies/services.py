"""Writes to studies and series."""

from __future__ import annotations

import uuid

from django.db import transaction
from django.db.models import Count

from backend.studies.models import Series


def series_summarize(*, series_id: uuid.UUID | str) -> Series:
    """Recompute what a series knows about its instances (count) from the instances themselves;
    idempotent, so a redelivered task does no harm."""
    with transaction.atomic():
        series = Series.objects.select_for_update().get(pk=series_id)
        counts = series.instances.aggregate(n=Count("id"))
        series.instance_count = counts["n"]
        series.save(update_fields=["instance_count", "updated_at"])
    return series


def series_summary_enqueue(*, series_id: uuid.UUID | str) -> None:
    """Queue a summary once the surrounding transaction commits (nothing if it rolls back)."""
    from backend.studies.tasks import series_summarize_task

    sid = str(series_id)
    transaction.on_commit(lambda: series_summarize_task.delay(sid))
