from __future__ import annotations

import uuid

from backend.accounts.selectors import AnyUser, site_ids_for
from backend.scoring.models import Finding, ScoringRun
from backend.studies.models import Series
from backend.studies.selectors import NotInScope, series_get


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


def finding_get(*, user: AnyUser, finding_id: int) -> Finding:
    """One finding of the caller's sites; another site's is ``NotInScope`` (a 404)."""
    finding = (
        Finding.objects.filter(site_id__in=site_ids_for(user), pk=finding_id)
        .select_related("instance__series")
        .first()
    )
    if finding is None:
        owner = Finding.objects.filter(pk=finding_id).values_list("site_id", flat=True).first()
        raise NotInScope("finding", str(finding_id), owner)
    return finding
