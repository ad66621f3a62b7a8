"""Writes of the dashboards: rebuild rollup cells, raise, notify and acknowledge alerts."""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from django.conf import settings
from django.db import transaction
from django.db.models import (
    Count,
    DateField,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Lower, NullIf, TruncWeek
from django.utils import timezone

from backend.accounts.models import User
from backend.audit.models import AuditAction
from backend.audit.services import AuditTarget, audit_record
from backend.dashboards import notify
from backend.dashboards.models import (
    NONDIAGNOSTIC,
    Alert,
    AlertSettings,
    ArtifactRollup,
    QualityRollup,
    RollupState,
)
from backend.dashboards.stats import jump_test
from backend.review.models import FindingReview
from backend.scoring.models import (
    ARTIFACT_TYPE_CHOICES,
    Finding,
    InstanceScore,
    ModelPromotion,
    ReviewState,
    RunStatus,
)
from backend.studies.models import Series, SeriesStatus

log = logging.getLogger(__name__)

ARTIFACT_TYPES = [name for name, _ in ARTIFACT_TYPE_CHOICES]
METRICS = [NONDIAGNOSTIC, *ARTIFACT_TYPES]
TRAILING_WEEKS = 8
# A run that finished just before the previous pass may commit just after it: look back this far.
WATERMARK_OVERLAP = dt.timedelta(minutes=10)

# The protocol of a series: the normalised protocol name from ingest, else its lower-cased
# description; shared by the rollups and the drill-down so both count the same series.
PROTOCOL_KEY = Coalesce(NullIf(F("protocol"), Value("")), Lower(F("description")), Value(""))
WEEK_OF = TruncWeek("received_at", output_field=DateField())


def scored_series() -> QuerySet[Any]:
    """Series with a finished current scoring run, annotated with protocol key and week."""
    return Series.objects.filter(
        status=SeriesStatus.SCORED,
        current_run__isnull=False,
        current_run__status=RunStatus.DONE,
    ).annotate(protocol_key=PROTOCOL_KEY, week=WEEK_OF)


def _repeat_of_earlier() -> Exists:
    earlier = Series.objects.annotate(protocol_key=PROTOCOL_KEY).filter(
        study_id=OuterRef("study_id"),
        protocol_key=OuterRef("protocol_key"),
        sequence_family=OuterRef("sequence_family"),
        received_at__lt=OuterRef("received_at"),
    )
    return Exists(earlier)


CellKey = tuple[int, int | None, str, str, dt.date]


def _cells_compute(site_id: int, weeks: Iterable[dt.date]) -> list[QualityRollup]:
    """Aggregate the scored series of ``site_id`` in ``weeks`` into unsaved rollup cells (their
    artifact counts in ``cell._artifacts``), in three grouped queries."""
    weeks = sorted(set(weeks))
    series = scored_series().filter(site_id=site_id, week__in=weeks)
    keys = ("site_id", "scanner_id", "protocol_key", "sequence_family", "week")
    rows = (
        series.annotate(is_repeat=_repeat_of_earlier())
        .values(*keys)
        .annotate(
            n=Count("id"),
            nd=Count("id", filter=Q(current_run__nondiagnostic=True)),
            rep=Count("id", filter=Q(is_repeat=True)),
            suit=Sum(Coalesce("suitability", "current_run__suitability")),
        )
    )
    cells: dict[CellKey, QualityRollup] = {}
    for row in rows:
        key: CellKey = tuple(row[k] for k in keys)
        cell = QualityRollup(
            site_id=row["site_id"],
            scanner_id=row["scanner_id"],
            protocol=row["protocol_key"][:128],
            sequence_family=row["sequence_family"],
            week=row["week"],
            series_scored=row["n"],
            series_nondiagnostic=row["nd"],
            series_repeated=row["rep"],
            suitability_sum=row["suit"] or 0.0,
            instances_scored=0,
            verdict_seconds_sum=0.0,
        )
        cell._artifacts = {}  # type: ignore[attr-defined]
        cells[key] = cell
    if not cells:
        return []

    prefix = "run__series__"
    current = Q(run_id=F("run__series__current_run_id"))
    scope = Q(
        **{f"{prefix}site_id": site_id, f"{prefix}status": SeriesStatus.SCORED},
        run__status=RunStatus.DONE,
    )
    # A finding a radiologist rejected is not an artifact the series had: it counts for
    # nothing (a correction or an acceptance keeps it).
    findings = (
        Finding.objects.filter(scope, current)
        .exclude(review_state=ReviewState.REJECTED)
        .annotate(
            protocol_key=Coalesce(
                NullIf(F(f"{prefix}protocol"), Value("")),
                Lower(F(f"{prefix}description")),
                Value(""),
            ),
            week=TruncWeek(f"{prefix}received_at", output_field=DateField()),
        )
        .filter(week__in=weeks)
        .values(
            f"{prefix}scanner_id",
            "protocol_key",
            f"{prefix}sequence_family",
            "week",
            "artifact_type",
        )
        .annotate(n=Count("run__series_id", distinct=True))
        .values_list(
            f"{prefix}scanner_id",
            "protocol_key",
            f"{prefix}sequence_family",
            "week",
            "artifact_type",
            "n",
        )
    )
    for scanner_id, protocol, family, week, artifact, n in findings:
        found = cells.get((site_id, scanner_id, protocol, family, week))
        if found is not None:
            found._artifacts[artifact] = n  # type: ignore[attr-defined]

    # From arrival to the slice's first verdict, by whichever run gave it: a re-scoring weeks
    # later (a new model, an archive) makes new scores, not a slower verdict.
    first_verdict = (
        InstanceScore.objects.filter(instance=OuterRef("instance"), frame=1)
        .order_by("created_at")
        .values("created_at")[:1]
    )
    verdict = ExpressionWrapper(
        Subquery(first_verdict) - F("instance__received_at"), output_field=DurationField()
    )
    timings = (
        # One row per instance: an Enhanced MR instance's frames share its verdict (frame 1).
        InstanceScore.objects.filter(scope, current, frame=1)
        .annotate(
            protocol_key=Coalesce(
                NullIf(F(f"{prefix}protocol"), Value("")),
                Lower(F(f"{prefix}description")),
                Value(""),
            ),
            week=TruncWeek(f"{prefix}received_at", output_field=DateField()),
        )
        .filter(week__in=weeks)
        .values(f"{prefix}scanner_id", "protocol_key", f"{prefix}sequence_family", "week")
        .annotate(n=Count("id"), delay=Sum(verdict))
        .values_list(
            f"{prefix}scanner_id", "protocol_key", f"{prefix}sequence_family", "week", "n", "delay"
        )
    )
    for scanner_id, protocol, family, week, n, delay in timings:
        found = cells.get((site_id, scanner_id, protocol, family, week))
        if found is not None:
            found.instances_scored = n
            found.verdict_seconds_sum = max(0.0, delay.total_seconds()) if delay else 0.0
    return list(cells.values())


def _site_weeks_replace(site_id: int, weeks: set[dt.date]) -> int:
    cells = _cells_compute(site_id, weeks)
    with transaction.atomic():
        QualityRollup.objects.filter(site_id=site_id, week__in=weeks).delete()
        QualityRollup.objects.bulk_create(cells)
        ArtifactRollup.objects.bulk_create(
            ArtifactRollup(rollup=cell, artifact_type=artifact, series_with=n)
            for cell in cells
            for artifact, n in cell._artifacts.items()  # type: ignore[attr-defined]
        )
    return len(cells)


@dataclass
class RefreshResult:
    site_weeks: int
    cells: int
    alerts: list[Alert]


def rollups_refresh(
    *,
    full: bool = False,
    progress: Callable[[int, int], None] | None = None,
    evaluate_alerts: bool = True,
) -> RefreshResult:
    """Rebuild the rollup cells of every (site, week) with a scoring run finished since the last
    pass (all of them with ``full``), then test the rebuilt weeks for alerts.

    Incremental by (site, week): one late slice of an old series rebuilds only that week of that
    site. ``progress(done, total)`` is called after each (site, week).
    """
    RollupState.objects.get_or_create(name="default")
    with transaction.atomic():
        # One refresh at a time (beat and the command may overlap): the other one skips.
        state = RollupState.objects.select_for_update(skip_locked=True).filter(name="default")
        locked = state.first()
        if locked is None:
            return RefreshResult(site_weeks=0, cells=0, alerts=[])
        return _refresh_locked(locked, full, progress, evaluate_alerts)


def _refresh_locked(
    state: RollupState,
    full: bool,
    progress: Callable[[int, int], None] | None,
    evaluate_alerts: bool,
) -> RefreshResult:
    started = timezone.now()
    series = scored_series()
    if not full and state.watermark is not None:
        since = state.watermark - WATERMARK_OVERLAP
        series = series.filter(
            # scored since the last pass;
            Q(current_run__finished_at__gt=since)
            # a finding of its run reviewed since (a rejected one no longer counts);
            | Q(current_run_id__in=FindingReview.objects.filter(created_at__gt=since).values(
                "finding__run_id"
            ))
            # or re-pointed by a promotion or rollback since, to a run that finished long ago.
            | Q(current_run__model_version_id__in=ModelPromotion.objects.filter(
                created_at__gt=since
            ).values("model_version_id"))
        )  # fmt: skip
    pairs = sorted(set(series.values_list("site_id", "week").distinct()))
    if full:
        # Weeks whose series all disappeared lose their cells too.
        existing = set(QualityRollup.objects.values_list("site_id", "week").distinct())
        for site_id, week in existing - set(pairs):
            QualityRollup.objects.filter(site_id=site_id, week=week).delete()
    by_site: dict[int, set[dt.date]] = defaultdict(set)
    for site_id, week in pairs:
        by_site[site_id].add(week)
    cells = done = 0
    for site_id, weeks in by_site.items():
        for week in sorted(weeks):
            cells += _site_weeks_replace(site_id, {week})
            done += 1
            if progress:
                progress(done, len(pairs))
    state.watermark = started
    state.refreshed_at = timezone.now()
    state.save(update_fields=["watermark", "refreshed_at"])
    alerts: list[Alert] = []
    if evaluate_alerts:
        for site_id, weeks in by_site.items():
            alerts += alerts_evaluate(site_id=site_id, weeks=weeks)
    return RefreshResult(site_weeks=len(pairs), cells=cells, alerts=alerts)


# --- alerts ---------------------------------------------------------------------------------


def _weekly_counts(site_id: int) -> dict[tuple[int | None, str], dict[dt.date, tuple[int, int]]]:
    """(scanner, metric) → week → (series with the metric, series scored), over all protocols."""
    totals = {
        (row["scanner_id"], row["week"]): (row["n"], row["nd"])
        for row in QualityRollup.objects.filter(site_id=site_id)
        .values("scanner_id", "week")
        .annotate(n=Sum("series_scored"), nd=Sum("series_nondiagnostic"))
    }
    counts: dict[tuple[int | None, str], dict[dt.date, tuple[int, int]]] = defaultdict(dict)
    for (scanner_id, week), (n, nd) in totals.items():
        counts[(scanner_id, NONDIAGNOSTIC)][week] = (nd, n)
        for artifact in ARTIFACT_TYPES:
            counts[(scanner_id, artifact)][week] = (0, n)
    artifact_rows = (
        ArtifactRollup.objects.filter(rollup__site_id=site_id)
        .values("rollup__scanner_id", "rollup__week", "artifact_type")
        .annotate(c=Sum("series_with"))
    )
    for row in artifact_rows:
        scanner_id, week = row["rollup__scanner_id"], row["rollup__week"]
        counts[(scanner_id, row["artifact_type"])][week] = (row["c"], totals[(scanner_id, week)][0])
    return counts


def alerts_evaluate(*, site_id: int, weeks: Iterable[dt.date]) -> list[Alert]:
    """Test each scanner's weekly rates (non-diagnostic and each artifact type) in ``weeks``
    against its trailing eight weeks; raise an alert where the jump is significant.

    Every (scanner, metric) of a site-week is one test, so the family-wise error rate of that
    site-week is held at ``ARTISCAN_ALERT_ALPHA`` by Bonferroni: each test runs at alpha / m.
    """
    alpha = float(settings.ARTISCAN_ALERT_ALPHA)
    counts = _weekly_counts(site_id)
    raised: list[Alert] = []
    for week in sorted(set(weeks)):
        trailing_weeks = [week - dt.timedelta(weeks=i) for i in range(TRAILING_WEEKS, 0, -1)]
        tests = []
        for (scanner_id, metric), series in counts.items():
            if week not in series:
                continue
            count, total = series[week]
            result = jump_test(count, total, [series.get(w, (0, 0)) for w in trailing_weeks])
            if result is not None:
                tests.append((scanner_id, metric, result))
        threshold = alpha / len(tests) if tests else alpha
        significant = set()
        for scanner_id, metric, result in tests:
            if result.p_value >= threshold or result.count < 3:
                continue
            significant.add((scanner_id, metric))
            key: dict[str, Any] = {"site_id": site_id, "scanner_id": scanner_id}
            alert, created = Alert.objects.update_or_create(
                **key,
                metric=metric,
                week=week,
                defaults={
                    "count": result.count,
                    "total": result.total,
                    "baseline_count": result.baseline_count,
                    "baseline_total": result.baseline_total,
                    "baseline_weeks": result.baseline_weeks,
                    "dispersion": result.dispersion,
                    "p_value": result.p_value,
                    "threshold": threshold,
                    "withdrawn_at": None,
                },
            )
            if created:
                raised.append(alert)
                transaction.on_commit(partial(_notify_later, alert.pk))
        # An open alert of this week whose jump a recount took away (findings rejected, a
        # model rolled back, series re-scored) is withdrawn, with the week's counts as they are.
        current = {(scanner_id, metric): result for scanner_id, metric, result in tests}
        for alert in Alert.objects.filter(
            site_id=site_id, week=week, acknowledged_at__isnull=True, withdrawn_at__isnull=True
        ):
            if (alert.scanner_id, alert.metric) in significant:
                continue
            alert.withdrawn_at = timezone.now()
            fields = ["withdrawn_at"]
            now_counts = counts.get((alert.scanner_id, alert.metric), {}).get(week)
            if now_counts is not None:
                alert.count, alert.total = now_counts
                fields += ["count", "total"]
            if (alert.scanner_id, alert.metric) in current:
                alert.p_value = current[(alert.scanner_id, alert.metric)].p_value
                fields.append("p_value")
            alert.save(update_fields=fields)
            log.info("quality alert %s withdrawn after a recount", alert.pk)
    return raised


def _notify_later(alert_id: int) -> None:
    from backend.dashboards.tasks import alert_notify_task

    notify_later(Alert, alert_id, alert_notify_task)


def notify_later(model: type[Any], alert_id: int, task: Any) -> None:
    """Hand an alert of ``model`` to ``task`` if its site sends alerts anywhere."""
    alert = model.objects.select_related("site__alert_settings").get(pk=alert_id)
    config = getattr(alert.site, "alert_settings", None)
    if config is not None and (config.email_list or config.webhook_url):
        task.delay(alert_id)


ALERT_CAUSES = {
    "spike": (
        "hardware",
        "Spikes come from the scanner's hardware (arcing, a loose connection, a failing RF or "
        "gradient component), not from patients: have service check the scanner.",
    ),
    "zipper": (
        "hardware",
        "Zipper lines are RF interference: check the room's door and RF shielding and remove "
        "electronic devices from the room; call service if it persists.",
    ),
    "noise": (
        "hardware",
        "More noise points at the receive chain (coil elements, connectors, preamplifiers): "
        "run the coil QA.",
    ),
    "bias_field": (
        "setup",
        "Intensity inhomogeneity: check coil selection and the prescan (shim, B1) calibration.",
    ),
    "aliasing": ("protocol", "Wrap-around: the field of view is too small for the heads scanned."),
    "motion": ("patients", "Motion: review immobilisation and the length of the protocols."),
}
"""What a jump of each rate most likely points at (MISSION: a spike-rate jump points at
hardware), as (kind, advice); the other types vary with patients and protocols."""


def alert_cause(metric: str) -> str:
    """The likely cause of a jump of ``metric``, for the alert's reader; "" when none is known."""
    found = ALERT_CAUSES.get(metric)
    return found[1] if found else ""


def alert_payload(alert: Alert) -> dict[str, object]:
    """What leaves the building about an alert: site, scanner label and counts, no patient data."""
    scanner = alert.scanner
    return {
        "kind": "artiscan.quality_alert",
        "id": alert.pk,
        "site": alert.site.slug,
        "scanner": str(scanner) if scanner else None,
        "metric": alert.metric,
        "week": alert.week.isoformat(),
        "count": alert.count,
        "total": alert.total,
        "rate": round(alert.rate, 4),
        "baseline_rate": round(alert.baseline_rate, 4),
        "baseline_weeks": alert.baseline_weeks,
        "p_value": alert.p_value,
        "threshold": alert.threshold,
        "likely_cause": alert_cause(alert.metric),
        "dashboard": f"{settings.ARTISCAN_PUBLIC_URL.rstrip('/')}/dashboards/?site={alert.site_id}",
    }


def _quality_message(alert: Alert) -> tuple[str, str, dict[str, object]]:
    payload = alert_payload(alert)
    metric = str(payload["metric"]).replace("_", " ")
    hardware = ALERT_CAUSES.get(alert.metric, ("", ""))[0] == "hardware"
    subject = (
        f"[ArtiScan] {metric} rate jumped on {payload['scanner']} (week of {payload['week']})"
        + (": check the scanner's hardware" if hardware else "")
    )
    cause = f"\n\nLikely cause: {payload['likely_cause']}" if payload["likely_cause"] else ""
    body = (
        f"Site {alert.site.name}, scanner {payload['scanner']}: {alert.count} of "
        f"{alert.total} series ({alert.rate:.0%}) in the week of {alert.week} "
        f"had {metric}, against {alert.baseline_rate:.1%} over the previous "
        f"{alert.baseline_weeks} weeks (p = {alert.p_value:.2g}, threshold "
        f"{alert.threshold:.2g}).{cause}\n\nDashboard: {payload['dashboard']}\n"
    )
    return subject, body, payload


def alert_notify(*, alert_id: int) -> Alert:
    """Send one alert by e-mail and/or webhook as its site configured (``notify_once``)."""
    return cast(Alert, notify_once(Alert, alert_id, _quality_message))


Message = Callable[[Any], tuple[str, str, dict[str, object]]]


def notify_once(model: type[Any], alert_id: int, message: Message) -> Any:
    """Send one alert of ``model`` (a quality alert, an access alert) by e-mail and/or webhook
    as its site configured, with the subject, body and webhook payload ``message`` makes of it;
    record when (or why not). Raises ``notify.NotifyError`` on a transient failure so the task
    can retry.

    Safe to run twice (a retry, a redelivered task): the row is locked while sending, so a second
    delivery arriving meanwhile leaves it to the first; what went already is not sent again (the
    e-mail of an alert whose webhook failed is sent once, the retry only POSTs).
    """
    error: notify.NotifyError | None = None
    with transaction.atomic():
        alert = model.objects.select_for_update(skip_locked=True).filter(pk=alert_id).first()
        if alert is None:  # another delivery of this task is sending it right now
            return model.objects.get(pk=alert_id)
        config = AlertSettings.objects.filter(site_id=alert.site_id).first()
        if alert.notified_at is not None or config is None:
            return alert
        subject, body, payload = message(alert)
        try:
            if config.email_list and alert.emailed_at is None:
                notify.mail_send(subject=subject, body=body, recipients=config.email_list)
                alert.emailed_at = timezone.now()
            if config.webhook_url:
                notify.webhook_post(url=config.webhook_url, payload=payload)
            alert.notified_at = timezone.now()
            alert.notify_error = ""
        except notify.NotifyError as exc:
            error = exc
            alert.notify_error = str(exc)[:300]
        alert.save(update_fields=["emailed_at", "notified_at", "notify_error"])
    if error is not None:
        raise error
    return alert


def alert_acknowledge(*, alert: Alert, user: User, request: object | None = None) -> Alert:
    """Record who acknowledged the alert and when (once; later calls keep the first), audited."""
    return cast(Alert, acknowledge(Alert, "quality_alert", alert.pk, user, request))


def acknowledge(
    model: type[Any], object_type: str, alert_id: int, user: User, request: object | None
) -> Any:
    """Record who acknowledged an alert of ``model`` and when (once), on the audit trail."""
    with transaction.atomic():
        locked = model.objects.select_for_update().get(pk=alert_id)
        if locked.acknowledged_at is None:
            locked.acknowledged_by = user
            locked.acknowledged_at = timezone.now()
            locked.save(update_fields=["acknowledged_by", "acknowledged_at"])
        audit_record(
            user=user,
            action=AuditAction.ANNOTATE,
            targets=[AuditTarget(object_type, str(locked.pk), locked.site_id)],
            request=request,  # type: ignore[arg-type]
        )
    return locked


def alert_settings_update(*, site_id: int, emails: str, webhook_url: str) -> AlertSettings:
    config, _ = AlertSettings.objects.update_or_create(
        site_id=site_id, defaults={"emails": emails, "webhook_url": webhook_url}
    )
    return config
