from __future__ import annotations

import uuid

from backend.accounts.selectors import AnyUser
from backend.scoring.models import ScoringRun
from backend.studies.models import Series
from backend.studies.selectors import series_get


def series_result(*, user: AnyUser, series_id: uuid.UUID | str) -> tuple[Series, ScoringRun | None]:
    """The series (scoped to the caller's sites) and its current scoring run, if any."""
    series = series_get(user=user, series_id=series_id)
    if series.current_run_id is None:
        return series, None
    run = (
        ScoringRun.objects.filter(id=series.current_run_id)
        .select_related("model_version")
        .prefetch_related("instance_scores__instance", "findings")
        .first()
    )
    return series, run
