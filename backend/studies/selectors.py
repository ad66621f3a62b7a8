"""Reads of clinical data. Every query starts from ``_scoped``: the caller's sites only.

A row of another site is indistinguishable from a row that does not exist (``NotInScope`` is a
404), so ids from the client are never trusted and never confirm existence.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any, TypeVar

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db.models import (
    Case,
    Exists,
    F,
    Model,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.expressions import OrderBy
from django.db.models.functions import Coalesce

from backend.accounts.selectors import AnyUser, site_ids_for
from backend.studies.models import Instance, Series, Study

M = TypeVar("M", bound=Model)


class NotInScope(Exception):
    """The object does not exist or belongs to a site the caller cannot see."""

    def __init__(self, object_type: str, object_id: str, site_id: int | None = None) -> None:
        super().__init__(f"{object_type} {object_id} not found")
        self.object_type = object_type
        self.object_id = object_id
        # The owning site, for the audit trail only (its admin sees the denied attempt); the
        # caller is told nothing.
        self.site_id = site_id


def _scoped(
    queryset: QuerySet[M], user: AnyUser, study: tuple[str, str] | None = None
) -> QuerySet[M]:
    """``queryset`` limited to the caller's sites; ``study``: the path to the objects' study and
    its UID, to keep only that study's (series and instances).

    The study's own site is constrained too (the same site as its series and instances): then a
    lookup starts from the study's unique (site, UID) index, then the series' (study, UID), then
    the instance's (series, UID), one row each. Constrained on the object's own site alone,
    SQLite (which keeps no statistics unless told to) walked that site's index — every instance
    of the site for each WADO-RS frame: 17 ms at 50,000 instances in the site, against 0.1 ms
    (``tests/backend/test_embedded_mode.py`` reads the plans)."""
    sites = site_ids_for(user)
    queryset = queryset.filter(site_id__in=sites)
    queryset = _without_blinded_results(queryset, user)
    if study is None:
        return queryset
    path, study_uid = study
    return queryset.filter(**{f"{path}__site_id__in": sites, f"{path}__study_uid": study_uid})


def _without_blinded_results(queryset: QuerySet[M], user: AnyUser) -> QuerySet[M]:
    """Series and instances without the model's DICOM SEG series of the studies ``user`` reads
    blind (an active blinded annotation campaign): through QIDO-RS a viewer loaded the model's
    masks over the series being read. One subquery in the same statement, no extra trip."""
    if queryset.model not in (Series, Instance) or not getattr(user, "pk", None):
        return queryset
    blinded = blinded_assignments(user).values("series__study_id")
    if queryset.model is Series:
        return queryset.exclude(modality=SEG_MODALITY, study_id__in=blinded)
    return queryset.exclude(series__modality=SEG_MODALITY, series__study_id__in=blinded)


SEG_MODALITY = "SEG"


def blinded_assignments(user: AnyUser) -> QuerySet[Any]:
    """``user``'s assignments in active blinded annotation campaigns (none for anonymous)."""
    from annotation.models import Assignment, CampaignStatus

    return Assignment.objects.filter(
        reader_id=getattr(user, "pk", None) or 0,
        campaign__blinded=True,
        campaign__status=CampaignStatus.ACTIVE,
    )


def _get(queryset: QuerySet[M], object_type: str, object_id: uuid.UUID | str) -> M:
    try:
        return queryset.get(pk=object_id)
    except (ObjectDoesNotExist, ValueError, TypeError, ValidationError):
        owner = None
        try:
            owner = _owner(queryset.model, pk=object_id)
        except (ValueError, TypeError, ValidationError):
            pass
        raise NotInScope(object_type, str(object_id)[:64], owner) from None


def study_list(*, user: AnyUser, site_id: int | None = None) -> QuerySet[Study]:
    qs = _scoped(Study.objects.select_related("site"), user)
    if site_id is not None:
        qs = qs.filter(site_id=site_id)
    return qs.order_by("-received_at", "id")


def study_get(*, user: AnyUser, study_id: uuid.UUID | str) -> Study:
    return _get(_scoped(Study.objects.select_related("site"), user), "study", study_id)


SERIES_ORDERINGS: dict[str, tuple[str | OrderBy, ...]] = {
    "received": ("-received_at", "id"),
    "-received": ("received_at", "id"),
    "suitability": (F("shown_suitability").asc(nulls_last=True), "-received_at"),
    "-suitability": (F("shown_suitability").desc(nulls_last=True), "-received_at"),
    "description": ("description", "-received_at"),
    "-description": ("-description", "-received_at"),
    "protocol": ("protocol", "-received_at"),
    "-protocol": ("-protocol", "-received_at"),
}
"""Worklist orders by name: "received" is newest first (the default), "suitability" worst first."""


def series_list(
    *,
    user: AnyUser,
    study_id: uuid.UUID | str | None = None,
    site_id: int | None = None,
    status: str | None = None,
    modality: str | None = None,
    received_from: datetime.date | None = None,
    received_to: datetime.date | None = None,
    search: str | None = None,
    nondiagnostic: bool = False,
    unreviewed: bool = False,
    ordering: str = "received",
) -> QuerySet[Series]:
    """The caller's series with the worklist's filters, each annotated with ``verdict`` (the
    latest reviewer verdict or None), ``run_nondiagnostic`` and ``dominant_artifact`` (the type
    with the largest total mask area in the current run, findings a reviewer rejected left
    out, or None).

    ``nondiagnostic``: a reviewer said so, or no reviewer spoke yet and the model said so.
    ``unreviewed``: no reviewer verdict yet. Dates are inclusive, in the server's time zone."""
    from backend.review.models import SeriesReview
    from backend.scoring.models import Finding, ReviewState

    verdict = (
        SeriesReview.objects.filter(series=OuterRef("pk"))
        .order_by("-created_at", "-id")
        .values("verdict")[:1]
    )
    dominant = (
        Finding.objects.filter(run_id=OuterRef("current_run_id"))
        .exclude(review_state=ReviewState.REJECTED)  # a reviewer said it is not there
        .values("artifact_type")
        .annotate(total=Sum("area_px"))
        .order_by("-total", "artifact_type")
        .values("artifact_type")[:1]
    )
    # A series the caller reads blind (an active blinded annotation campaign) is neither found
    # nor ordered by what the model said about it: the filter and the order would tell.
    blind = blinded_assignments(user).filter(series_id=OuterRef("pk"))
    # Slices, not instance objects: an Enhanced MR instance is as many slices as its frames.
    slices = (
        Instance.objects.filter(series=OuterRef("pk"))
        .values("series")
        .annotate(n=Sum("frame_count"))
        .values("n")
    )
    qs = _scoped(Series.objects.select_related("study", "site", "scanner"), user).annotate(
        slice_count=Coalesce(Subquery(slices), Value(0)),
        verdict=Subquery(verdict),
        dominant_artifact=Subquery(dominant),
        run_nondiagnostic=F("current_run__nondiagnostic"),
        blind=Exists(blind),
    )
    qs = qs.annotate(
        shown_suitability=Case(When(blind=True, then=Value(None)), default=F("suitability"))
    )
    if study_id is not None:
        qs = qs.filter(study_id=study_id)
    if site_id is not None:
        qs = qs.filter(site_id=site_id)
    if status is not None:
        qs = qs.filter(status=status)
    if modality is not None:
        qs = qs.filter(modality=modality)
    if received_from is not None:
        qs = qs.filter(received_at__date__gte=received_from)
    if received_to is not None:
        qs = qs.filter(received_at__date__lte=received_to)
    if search:
        qs = qs.filter(
            Q(description__icontains=search)
            | Q(protocol__icontains=search)
            | Q(study__description__icontains=search)
            | Q(scanner__label__icontains=search)
            | Q(scanner__model_name__icontains=search)
        )
    if nondiagnostic:
        qs = qs.filter(
            Q(verdict="nondiagnostic")
            | Q(verdict__isnull=True, current_run__nondiagnostic=True, blind=False)
        )
    if unreviewed:
        qs = qs.filter(verdict__isnull=True)
    return qs.order_by(*SERIES_ORDERINGS.get(ordering, SERIES_ORDERINGS["received"]))


def series_get(*, user: AnyUser, series_id: uuid.UUID | str) -> Series:
    return _get(
        _scoped(Series.objects.select_related("study", "site", "scanner"), user),
        "series",
        series_id,
    )


def instance_list(*, user: AnyUser, series_id: uuid.UUID | str) -> QuerySet[Instance]:
    series = series_get(user=user, series_id=series_id)
    return series.instances.order_by("instance_number", "sop_uid")


def _first_by_uid(
    queryset: QuerySet[M],
    user: AnyUser,
    object_type: str,
    uid: str,
    uid_field: str,
    study: tuple[str, str] | None = None,
    **filters: str,
) -> M:
    """The caller's object with these UIDs, or NotInScope naming the owner for the audit.
    ``study``: the path to the object's study and its UID (series and instances)."""
    found = _scoped(queryset, user, study).filter(**{uid_field: uid}, **filters).first()
    if found is None:
        # The same object in any site: from its study's UID down, one index per level (on its
        # SOP or series UID alone, every answer "not found" scanned the whole table).
        path = {f"{study[0]}__study_uid": study[1]} if study else {}
        raise NotInScope(
            object_type, uid[:64], _owner(queryset.model, **{uid_field: uid}, **filters, **path)
        )
    return found


def study_by_uid(*, user: AnyUser, study_uid: str) -> Study:
    return _first_by_uid(
        Study.objects.select_related("site").order_by("received_at"),
        user, "study", study_uid, "study_uid",
    )  # fmt: skip


def series_by_uid(*, user: AnyUser, study_uid: str, series_uid: str) -> Series:
    return _first_by_uid(
        Series.objects.select_related("study", "site"),
        user, "series", series_uid, "series_uid", study=("study", study_uid),
    )  # fmt: skip


def instance_by_uid(*, user: AnyUser, study_uid: str, series_uid: str, sop_uid: str) -> Instance:
    return _first_by_uid(
        Instance.objects.select_related("series__study"),
        user, "instance", sop_uid, "sop_uid",
        study=("series__study", study_uid), series__series_uid=series_uid,
    )  # fmt: skip


def _owner(model: type[Model], **lookup: object) -> int | None:
    """The site of an object the caller may not see, for the audit trail only."""
    site_id = model._default_manager.filter(**lookup).values_list("site_id", flat=True).first()
    return int(site_id) if site_id is not None else None


def instance_search(
    *,
    user: AnyUser,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> QuerySet[Instance]:
    study = ("series__study", study_uid) if study_uid else None
    qs = _scoped(Instance.objects.select_related("series__study"), user, study)
    if series_uid:
        qs = qs.filter(series__series_uid=series_uid)
    if sop_uid:
        qs = qs.filter(sop_uid=sop_uid)
    return qs.order_by("series__study__received_at", "series__series_number", "instance_number")


def series_search(
    *,
    user: AnyUser,
    study_uid: str | None = None,
    series_uid: str | None = None,
    modality: str | None = None,
) -> QuerySet[Series]:
    qs = _scoped(
        Series.objects.select_related("study"), user, ("study", study_uid) if study_uid else None
    )
    if series_uid:
        qs = qs.filter(series_uid=series_uid)
    if modality:
        qs = qs.filter(modality=modality)
    return qs.order_by("study__received_at", "series_number", "received_at")


def study_search(
    *, user: AnyUser, study_uid: str | None = None, modality: str | None = None
) -> QuerySet[Study]:
    qs = _scoped(Study.objects.all(), user)
    if study_uid:
        qs = qs.filter(study_uid=study_uid)
    if modality:
        qs = qs.filter(series__modality=modality).distinct()
    return qs.order_by("-received_at", "id")
