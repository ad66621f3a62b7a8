"""Reads of the dashboards. Every query starts from the caller's QA sites (``_site_ids``): the
sites where they are a site QA administrator, every site for a superuser. Aggregates are scoped
the same way as rows, so another site's numbers never leak through a total or a count."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from django.db.models import Count, Exists, Max, Min, OuterRef, QuerySet, Sum
from django.utils import timezone

from backend.accounts.models import Role, Site
from backend.accounts.selectors import AnyUser, site_ids_with_role
from backend.dashboards.models import (
    NONDIAGNOSTIC,
    AccessAlert,
    Alert,
    AlertSettings,
    QualityRollup,
)
from backend.dashboards.models import ArtifactRollup as _ArtifactRollup
from backend.dashboards.services import ARTIFACT_TYPES, METRICS, scored_series
from backend.dashboards.stats import wilson
from backend.scoring.models import Finding, ReviewState
from backend.studies.models import Scanner
from backend.studies.selectors import NotInScope, blinded_assignments

QA_ROLES = (Role.SITE_ADMIN,)
RATE_COLUMNS = ["nondiagnostic_rate", *[f"{a}_rate" for a in ARTIFACT_TYPES]]
# The columns of each table, so that an empty table still exports its header.
SUMMARY_COLUMNS = [
    "site_id", "site", "scanner_id", "scanner", "protocol", "sequence_family", "series",
    "nondiagnostic", *RATE_COLUMNS, "mean_suitability", "repeat_rate", "mean_verdict_s",
]  # fmt: skip
TREND_COLUMNS = [
    "week", "series",
    *[f"{m}_{k}" for m in METRICS for k in ("count", "rate", "low", "high")],
    "mean_suitability", "repeat_rate", "mean_verdict_s",
]  # fmt: skip
WORST_COLUMNS = [
    "site_id", "site", "scanner_id", "protocol", "label", "metric", "series", "count", "rate",
    "low", "high",
]  # fmt: skip
HEATMAP_COLUMNS = ["site_id", "site", "scanner_id", "scanner", "series", *RATE_COLUMNS]
DEFAULT_WEEKS = 12


def monday(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


@dataclass(frozen=True)
class Filters:
    site: int | None = None
    scanner: int | None = None
    protocol: str | None = None
    sequence_family: str | None = None
    week_from: dt.date | None = None
    week_to: dt.date | None = None

    def weeks(self) -> tuple[dt.date, dt.date]:
        end = monday(self.week_to or timezone.now().date())
        start = (
            monday(self.week_from)
            if self.week_from
            else end - dt.timedelta(weeks=DEFAULT_WEEKS - 1)
        )
        return start, end


def qa_site_ids(*, user: AnyUser) -> set[int]:
    return site_ids_with_role(user=user, roles=QA_ROLES)


def qa_site_list(*, user: AnyUser) -> QuerySet[Site]:
    return Site.objects.filter(id__in=qa_site_ids(user=user)).order_by("name")


def qa_site_get(*, user: AnyUser, site_id: int) -> Site:
    site = qa_site_list(user=user).filter(pk=site_id).first()
    if site is None:
        owner = site_id if Site.objects.filter(pk=site_id).exists() else None
        raise NotInScope("site", str(site_id), owner)
    return site


def _site_ids(user: AnyUser, filters: Filters) -> set[int]:
    allowed = qa_site_ids(user=user)
    if filters.site is not None:
        return allowed & {filters.site}
    return allowed


def _cells(user: AnyUser, filters: Filters) -> QuerySet[QualityRollup]:
    start, end = filters.weeks()
    qs = QualityRollup.objects.filter(
        site_id__in=_site_ids(user, filters), week__gte=start, week__lte=end
    )
    if filters.scanner is not None:
        qs = qs.filter(scanner_id=filters.scanner)
    if filters.protocol is not None:
        qs = qs.filter(protocol=filters.protocol)
    if filters.sequence_family is not None:
        qs = qs.filter(sequence_family=filters.sequence_family)
    return qs


SUMS = {
    "series": Sum("series_scored"),
    "nondiagnostic": Sum("series_nondiagnostic"),
    "repeated": Sum("series_repeated"),
    "suitability_sum": Sum("suitability_sum"),
    "instances": Sum("instances_scored"),
    "verdict_sum": Sum("verdict_seconds_sum"),
}


def _artifact_counts(
    user: AnyUser, filters: Filters, keys: Iterable[str]
) -> dict[tuple[Any, ...], dict[str, int]]:
    keys = list(keys)
    rows = (
        _ArtifactRollup.objects.filter(rollup__in=_cells(user, filters))
        .values(*[f"rollup__{k}" for k in keys], "artifact_type")
        .annotate(c=Sum("series_with"))
    )
    out: dict[tuple[Any, ...], dict[str, int]] = defaultdict(dict)
    for row in rows:
        out[tuple(row[f"rollup__{k}"] for k in keys)][row["artifact_type"]] = row["c"]
    return out


def _scanner_names(ids: Iterable[int | None]) -> dict[int | None, str]:
    names: dict[int | None, str] = {None: "(unknown scanner)"}
    for scanner in Scanner.objects.filter(id__in=[i for i in ids if i is not None]):
        names[scanner.pk] = str(scanner)
    return names


def _site_names(ids: Iterable[int]) -> dict[int, str]:
    return dict(Site.objects.filter(id__in=set(ids)).values_list("id", "name"))


def _rates(n: int, nd: int, artifacts: dict[str, int]) -> dict[str, float | None]:
    out: dict[str, float | None] = {"nondiagnostic_rate": nd / n if n else None}
    for artifact in ARTIFACT_TYPES:
        out[f"{artifact}_rate"] = artifacts.get(artifact, 0) / n if n else None
    return out


def summary_table(*, user: AnyUser, filters: Filters) -> list[dict[str, Any]]:
    """One row per site × scanner × protocol over the weeks of ``filters``."""
    keys = ("site_id", "scanner_id", "protocol", "sequence_family")
    groups = list(_cells(user, filters).values(*keys).annotate(**SUMS).order_by(*keys))
    artifacts = _artifact_counts(user, filters, keys)
    scanners = _scanner_names(g["scanner_id"] for g in groups)
    sites = _site_names(g["site_id"] for g in groups)
    rows = []
    for g in groups:
        n = g["series"]
        rows.append(
            {
                "site_id": g["site_id"],
                "site": sites.get(g["site_id"], ""),
                "scanner_id": g["scanner_id"],
                "scanner": scanners.get(g["scanner_id"], ""),
                "protocol": g["protocol"],
                "sequence_family": g["sequence_family"],
                "series": n,
                "nondiagnostic": g["nondiagnostic"],
                **_rates(n, g["nondiagnostic"], artifacts.get(tuple(g[k] for k in keys), {})),
                "mean_suitability": g["suitability_sum"] / n if n else None,
                "repeat_rate": g["repeated"] / n if n else None,
                "mean_verdict_s": g["verdict_sum"] / g["instances"] if g["instances"] else None,
            }
        )
    return rows


def trend(*, user: AnyUser, filters: Filters) -> list[dict[str, Any]]:
    """One row per week in range (empty weeks included): each rate with its 95 % Wilson
    interval, mean suitability, repeat rate and mean arrival→verdict time."""
    start, end = filters.weeks()
    groups: dict[dt.date, dict[str, Any]] = {
        g["week"]: dict(g) for g in _cells(user, filters).values("week").annotate(**SUMS)
    }
    artifacts = _artifact_counts(user, filters, ["week"])
    rows = []
    week = start
    while week <= end:
        g = groups.get(week)
        n = g["series"] if g else 0
        counts = {NONDIAGNOSTIC: g["nondiagnostic"] if g else 0, **artifacts.get((week,), {})}
        row: dict[str, Any] = {"week": week.isoformat(), "series": n}
        for metric in METRICS:
            c = counts.get(metric, 0)
            lo, hi = wilson(c, n)
            row[f"{metric}_count"] = c
            row[f"{metric}_rate"] = c / n if n else None
            row[f"{metric}_low"] = lo if n else None
            row[f"{metric}_high"] = hi if n else None
        row["mean_suitability"] = g["suitability_sum"] / n if g and n else None
        row["repeat_rate"] = g["repeated"] / n if g and n else None
        row["mean_verdict_s"] = g["verdict_sum"] / g["instances"] if g and g["instances"] else None
        rows.append(row)
        week += dt.timedelta(weeks=1)
    return rows


def worst(
    *, user: AnyUser, filters: Filters, by: str, metric: str, limit: int = 10, min_series: int = 5
) -> list[dict[str, Any]]:
    """Protocols (``by="protocol"``) or scanners ranked by the lower bound of the 95 % Wilson
    interval of ``metric``: a bad rate on three series does not outrank a steady one on 300."""
    keys = ("site_id", "scanner_id") if by == "scanner" else ("site_id", "protocol")
    groups = list(_cells(user, filters).values(*keys).annotate(**SUMS))
    artifacts = _artifact_counts(user, filters, keys) if metric != NONDIAGNOSTIC else {}
    scanners = _scanner_names(g["scanner_id"] for g in groups) if by == "scanner" else {}
    sites = _site_names(g["site_id"] for g in groups)
    rows = []
    for g in groups:
        n = g["series"]
        if n < min_series:
            continue
        key = tuple(g[k] for k in keys)
        c = g["nondiagnostic"] if metric == NONDIAGNOSTIC else artifacts.get(key, {}).get(metric, 0)
        lo, hi = wilson(c, n)
        label = scanners[g["scanner_id"]] if by == "scanner" else g["protocol"]
        rows.append(
            {
                "site_id": g["site_id"],
                "site": sites.get(g["site_id"], ""),
                "scanner_id": g.get("scanner_id"),
                "protocol": g.get("protocol"),
                "label": f"{label} · {sites.get(g['site_id'], '')}",
                "metric": metric,
                "series": n,
                "count": c,
                "rate": c / n,
                "low": lo,
                "high": hi,
            }
        )
    rows.sort(key=lambda r: (-r["low"], -r["rate"], r["label"]))
    return rows[:limit]


def heatmap(*, user: AnyUser, filters: Filters) -> list[dict[str, Any]]:
    """Scanner × artifact type: the share of the scanner's series with that artifact."""
    keys = ("site_id", "scanner_id")
    groups = list(_cells(user, filters).values(*keys).annotate(**SUMS).order_by(*keys))
    artifacts = _artifact_counts(user, filters, keys)
    scanners = _scanner_names(g["scanner_id"] for g in groups)
    sites = _site_names(g["site_id"] for g in groups)
    rows = []
    for g in groups:
        n = g["series"]
        counts = artifacts.get((g["site_id"], g["scanner_id"]), {})
        rows.append(
            {
                "site_id": g["site_id"],
                "site": sites.get(g["site_id"], ""),
                "scanner_id": g["scanner_id"],
                "scanner": scanners[g["scanner_id"]],
                "series": n,
                **_rates(n, g["nondiagnostic"], counts),
            }
        )
    return rows


def drilldown_series(
    *, user: AnyUser, filters: Filters, week: dt.date | None = None, metric: str | None = None
) -> QuerySet[Any]:
    """The scored series behind a bar, cell or point: same scope and same keys as the rollups."""
    start, end = filters.weeks()
    if week is not None:
        start = end = monday(week)
    qs = scored_series().filter(
        site_id__in=_site_ids(user, filters), week__gte=start, week__lte=end
    )
    if filters.scanner is not None:
        qs = qs.filter(scanner_id=filters.scanner)
    if filters.protocol is not None:
        qs = qs.filter(protocol_key=filters.protocol)
    if filters.sequence_family is not None:
        qs = qs.filter(sequence_family=filters.sequence_family)
    # A series the caller reads blind (an active blinded annotation campaign) shows no model
    # result here (the API blanks it) and is not found by what the model said about it.
    qs = qs.annotate(blind=Exists(blinded_assignments(user).filter(series_id=OuterRef("pk"))))
    if metric in (NONDIAGNOSTIC, *ARTIFACT_TYPES):
        qs = qs.filter(blind=False)
    if metric == NONDIAGNOSTIC:
        qs = qs.filter(current_run__nondiagnostic=True)
    elif metric in ARTIFACT_TYPES:
        qs = qs.filter(
            Exists(
                Finding.objects.filter(
                    run_id=OuterRef("current_run_id"), artifact_type=metric
                ).exclude(review_state=ReviewState.REJECTED)
            )
        )
    return qs.select_related("study", "scanner", "site", "current_run").order_by(
        "-received_at", "id"
    )


REFUSED_COLUMNS = ["site_id", "site", "source", "reason", "files", "first_at", "last_at"]


def refused_files(*, user: AnyUser, filters: Filters) -> list[dict[str, Any]]:
    """Files the door refused at the caller's sites in the weeks of ``filters``, by site, way
    in and reason: how many, first and last (from the quarantine's rows, which hold no header
    value; kept ``ARTISCAN_QUARANTINE_DAYS``). What a site's administrator needs to ask a sender
    to fix its images — the originals stay for superusers only."""
    from backend.ingest.models import QuarantinedFile

    start, end = filters.weeks()
    since = dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC)
    until = dt.datetime.combine(end + dt.timedelta(days=7), dt.time(), tzinfo=dt.UTC)
    rows = (
        QuarantinedFile.objects.filter(
            site_id__in=_site_ids(user, filters), received_at__gte=since, received_at__lt=until
        )
        .order_by()
        .values("site_id", "site__name", "source", "reason")
        .annotate(files=Count("id"), first_at=Min("received_at"), last_at=Max("received_at"))
        .order_by("-last_at", "site_id", "reason")
    )
    return [
        {
            "site_id": r["site_id"],
            "site": r["site__name"],
            "source": r["source"],
            "reason": r["reason"],
            "files": r["files"],
            "first_at": r["first_at"].isoformat(),
            "last_at": r["last_at"].isoformat(),
        }
        for r in rows[:200]
    ]


def _alerts_in_scope(
    model: type[Any], user: AnyUser, site_id: int | None, open_only: bool
) -> QuerySet[Any]:
    """Alerts of ``model`` (quality or access) of the caller's QA sites (``site_id``: one)."""
    sites = qa_site_ids(user=user)
    if site_id is not None:
        sites &= {site_id}
    qs = model.objects.filter(site_id__in=sites)
    if open_only:
        qs = qs.filter(acknowledged_at__isnull=True)
        if hasattr(model, "withdrawn_at"):
            qs = qs.filter(withdrawn_at__isnull=True)
    return qs


def _alert_in_scope(queryset: QuerySet[Any], object_type: str, alert_id: int) -> Any:
    alert = queryset.filter(pk=alert_id).first()
    if alert is None:
        owner = queryset.model.objects.filter(pk=alert_id).values_list("site_id", flat=True).first()
        raise NotInScope(object_type, str(alert_id), owner)
    return alert


def alert_list(
    *, user: AnyUser, site_id: int | None = None, open_only: bool = False
) -> QuerySet[Alert]:
    return (
        _alerts_in_scope(Alert, user, site_id, open_only)
        .select_related("site", "scanner", "acknowledged_by")
        .order_by("-week", "p_value")
    )


def alert_get(*, user: AnyUser, alert_id: int) -> Alert:
    return cast(Alert, _alert_in_scope(alert_list(user=user), "quality_alert", alert_id))


def access_alert_list(
    *, user: AnyUser, site_id: int | None = None, open_only: bool = False
) -> QuerySet[AccessAlert]:
    return (
        _alerts_in_scope(AccessAlert, user, site_id, open_only)
        .select_related("site", "acknowledged_by")
        .order_by("-created_at", "-id")
    )


def access_alert_get(*, user: AnyUser, alert_id: int) -> AccessAlert:
    return cast(
        AccessAlert, _alert_in_scope(access_alert_list(user=user), "access_alert", alert_id)
    )


def alert_settings_get(*, user: AnyUser, site_id: int) -> AlertSettings:
    site = qa_site_get(user=user, site_id=site_id)
    return AlertSettings.objects.filter(site=site).first() or AlertSettings(site=site)
