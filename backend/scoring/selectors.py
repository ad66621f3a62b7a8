from __future__ import annotations

import uuid

from django.db.models import QuerySet

from backend.accounts.selectors import AnyUser, site_ids_for
from backend.scoring.models import (
    Finding,
    ModelVersion,
    ScoringRun,
    SeriesRegionOfInterest,
    SliceAttempt,
)
from backend.studies.models import Series
from backend.studies.selectors import NotInScope, blinded_assignments, series_get


class NoSuchRun(LookupError):
    """The series (in scope) has no run of the model asked for."""


def _run_query() -> QuerySet[ScoringRun]:
    return ScoringRun.objects.select_related("model_version").prefetch_related(
        "instance_scores__instance", "findings"
    )


def series_result(
    *, user: AnyUser, series_id: uuid.UUID | str, model: str | None = None
) -> tuple[Series, ScoringRun | None]:
    """The series (scoped to the caller's sites) and its current scoring run, if any; with
    ``model`` (a version, or ``"name version"``) the run of that model version instead."""
    series = series_get(user=user, series_id=series_id)
    if model:
        for run in _run_query().filter(series=series):
            if model in (run.model_version.version, str(run.model_version)):
                return series, run
        raise NoSuchRun(model)
    if series.current_run_id is None:
        return series, None
    return series, _run_query().filter(id=series.current_run_id).first()


def series_runs(*, series: Series) -> list[ScoringRun]:
    """Every scoring run of ``series`` (one per model version), newest first."""
    return list(
        ScoringRun.objects.filter(series=series)
        .select_related("model_version")
        .order_by("-created_at")
    )


def series_roi(*, series: Series) -> SeriesRegionOfInterest | None:
    return (
        SeriesRegionOfInterest.objects.filter(series=series, cleared_at__isnull=True)
        .select_related("set_by")
        .first()
    )


def series_quarantined(*, series: Series, model_version: ModelVersion) -> list[SliceAttempt]:
    """The slices of ``series`` that ``model_version`` gave up on, with their reasons."""
    return list(
        SliceAttempt.objects.filter(
            instance__series=series, model_version=model_version, quarantined=True
        )
        .select_related("instance")
        .order_by("instance__instance_number")
    )


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


def blinded_series_ids(*, user: AnyUser) -> set[str]:
    """The series ``user`` reads blind (see :func:`model_results_blinded`), as strings: the
    worklist, the series and its instances, and live events leave the model's results out."""
    if not getattr(user, "is_authenticated", False):
        return set()
    return {str(s) for s in blinded_assignments(user).values_list("series_id", flat=True)}


def model_results_blinded(*, user: AnyUser, series_id: uuid.UUID | str) -> bool:
    """Whether ``user`` reads this series in an active blinded annotation campaign: the model's
    results (index, findings, masks) are then withheld from them everywhere, not only on the
    annotation pages, so a blinded reading stays blind."""
    if not getattr(user, "is_authenticated", False):
        return False
    return blinded_assignments(user).filter(series_id=series_id).exists()
