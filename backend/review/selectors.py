"""Reads of the review, scoped to the caller's sites (another site's row is ``NotInScope``)."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from backend.accounts.selectors import AnyUser, site_ids_for
from backend.review.models import FindingReview, SeriesReview
from backend.scoring.models import Finding
from backend.scoring.selectors import finding_get
from backend.studies.models import Series
from backend.studies.selectors import NotInScope, series_get


def finding_review_list(*, user: AnyUser, finding_id: int) -> tuple[Finding, list[FindingReview]]:
    """One finding and its review history, newest first."""
    finding = finding_get(user=user, finding_id=finding_id)
    reviews = list(
        FindingReview.objects.filter(finding=finding)
        .select_related("user")
        .order_by("-created_at", "-id")
    )
    return finding, reviews


def finding_review_get(*, user: AnyUser, review_id: int) -> FindingReview:
    review = (
        FindingReview.objects.filter(site_id__in=site_ids_for(user), pk=review_id)
        .select_related("finding__instance__series__study")
        .first()
    )
    if review is None:
        owner = FindingReview.objects.filter(pk=review_id).values_list("site_id", flat=True)
        raise NotInScope("finding_review", str(review_id), owner.first())
    return review


def series_review_summary(
    *, user: AnyUser, series_id: uuid.UUID | str
) -> tuple[Series, list[SeriesReview], dict[int, list[FindingReview]]]:
    """The series, its verdict history (newest first) and the history of each finding of its
    current run that has been reviewed (newest first)."""
    series = series_get(user=user, series_id=series_id)
    verdicts = list(
        SeriesReview.objects.filter(series=series)
        .select_related("user")
        .order_by("-created_at", "-id")
    )
    by_finding: dict[int, list[FindingReview]] = {}
    if series.current_run_id is not None:
        rows: QuerySet[FindingReview] = (
            FindingReview.objects.filter(finding__run_id=series.current_run_id)
            .select_related("user")
            .order_by("-created_at", "-id")
        )
        for row in rows:
            by_finding.setdefault(row.finding_id, []).append(row)
    return series, verdicts, by_finding
