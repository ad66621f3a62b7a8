"""REST endpoints of the site-quality dashboards: parse, call a selector or service, format.

Every table answers JSON ``{"columns": [...], "rows": [...]}`` and, with ``?format=csv``, the
same table as CSV. Aggregates are audited like rows: one audit row per site whose numbers left.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from backend.accounts.models import User
from backend.audit.mixins import ClinicalAPIView
from backend.audit.models import AuditAction
from backend.audit.services import AuditTarget
from backend.dashboards import notify, selectors, services
from backend.dashboards.access import access_alert_acknowledge
from backend.dashboards.models import METRIC_CHOICES, NONDIAGNOSTIC, AccessAlert, Alert
from backend.dashboards.renderers import CSVRenderer
from backend.dashboards.report import monthly_report_pdf

METRIC_NAMES = [m for m, _ in METRIC_CHOICES]
# Dates outside these are typing errors, and near the ends of the calendar the week arithmetic
# (the default twelve weeks before ``week_to``, the week after the last) overflows.
EARLIEST = dt.date(1970, 1, 5)
LATEST = dt.date(2199, 12, 28)
MAX_WEEKS = 260


def _check_dates(attrs: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        value = attrs.get(name)
        if value is not None and not EARLIEST <= value <= LATEST:
            raise serializers.ValidationError({name: f"must be {EARLIEST} to {LATEST}"})


class FilterSerializer(serializers.Serializer):
    site = serializers.IntegerField(required=False)
    scanner = serializers.IntegerField(required=False)
    protocol = serializers.CharField(required=False, max_length=128, allow_blank=True)  # "": none
    sequence_family = serializers.CharField(required=False, max_length=32, allow_blank=True)
    week_from = serializers.DateField(required=False)
    week_to = serializers.DateField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        _check_dates(attrs, ("week_from", "week_to", "week"))
        start, end = attrs.get("week_from"), attrs.get("week_to")
        if start and end and start > end:
            raise serializers.ValidationError("week_from is after week_to")
        # The range as the selectors will read it (either end may be left to its default).
        start, end = selectors.Filters(week_from=start, week_to=end).weeks()
        if start > end:
            raise serializers.ValidationError("week_from is after week_to")
        if (end - start).days > 7 * MAX_WEEKS:
            raise serializers.ValidationError("at most five years at a time")
        return attrs

    def filters(self) -> selectors.Filters:
        return selectors.Filters(**self.validated_data)


class TableSerializer(serializers.Serializer):
    columns = serializers.ListField(child=serializers.CharField())
    rows = serializers.ListField(child=serializers.DictField())


class DashboardApi(ClinicalAPIView):
    renderer_classes = [JSONRenderer, CSVRenderer]
    audit_action = AuditAction.LIST
    export_name = "artiscan"
    filter_class: type[FilterSerializer] = FilterSerializer
    columns: list[str] = []

    def parsed(self, request: Request) -> FilterSerializer:
        parsed = self.filter_class(data=request.query_params)
        parsed.is_valid(raise_exception=True)
        return parsed

    def table(self, request: Request, rows: list[dict[str, Any]], site: int | None) -> Response:
        """Answer ``rows`` and audit one access per site in scope (an export as an export)."""
        if request.accepted_renderer.format == "csv":
            self.audit_action = AuditAction.EXPORT
        sites = selectors.qa_site_ids(user=request.user)
        if site is not None:
            sites &= {site}
        self._audit_targets = [AuditTarget("dashboard", self.export_name, s) for s in sorted(sites)]
        return Response({"columns": list(rows[0]) if rows else self.columns, "rows": rows})


class SummaryApi(DashboardApi):
    export_name = "quality-summary"
    columns = selectors.SUMMARY_COLUMNS

    @extend_schema(parameters=[FilterSerializer], responses=TableSerializer)
    def get(self, request: Request) -> Response:
        parsed = self.parsed(request)
        rows = selectors.summary_table(user=request.user, filters=parsed.filters())
        return self.table(request, rows, parsed.validated_data.get("site"))


class TrendApi(DashboardApi):
    export_name = "quality-trend"
    columns = selectors.TREND_COLUMNS

    @extend_schema(parameters=[FilterSerializer], responses=TableSerializer)
    def get(self, request: Request) -> Response:
        parsed = self.parsed(request)
        rows = selectors.trend(user=request.user, filters=parsed.filters())
        return self.table(request, rows, parsed.validated_data.get("site"))


class RefusedApi(DashboardApi):
    """Files refused at the door, by site, way in and reason (no file, no header value)."""

    export_name = "refused-files"
    columns = selectors.REFUSED_COLUMNS

    @extend_schema(parameters=[FilterSerializer], responses=TableSerializer)
    def get(self, request: Request) -> Response:
        parsed = self.parsed(request)
        rows = selectors.refused_files(user=request.user, filters=parsed.filters())
        return self.table(request, rows, parsed.validated_data.get("site"))


class WorstFilterSerializer(FilterSerializer):
    by = serializers.ChoiceField(choices=["protocol", "scanner"], default="protocol")
    metric = serializers.ChoiceField(choices=METRIC_NAMES, default=NONDIAGNOSTIC)
    min_series = serializers.IntegerField(default=5, min_value=1)

    def filters(self) -> selectors.Filters:
        data = {
            k: v for k, v in self.validated_data.items() if k not in {"by", "metric", "min_series"}
        }
        return selectors.Filters(**data)


class WorstApi(DashboardApi):
    export_name = "quality-worst"
    columns = selectors.WORST_COLUMNS
    filter_class = WorstFilterSerializer

    @extend_schema(parameters=[WorstFilterSerializer], responses=TableSerializer)
    def get(self, request: Request) -> Response:
        parsed = self.parsed(request)
        data = parsed.validated_data
        rows = selectors.worst(
            user=request.user,
            filters=parsed.filters(),
            by=data["by"],
            metric=data["metric"],
            min_series=data["min_series"],
        )
        self.export_name = f"worst-{data['by']}s-{data['metric']}"
        return self.table(request, rows, data.get("site"))


class HeatmapApi(DashboardApi):
    export_name = "scanner-artifact-heatmap"
    columns = selectors.HEATMAP_COLUMNS

    @extend_schema(parameters=[FilterSerializer], responses=TableSerializer)
    def get(self, request: Request) -> Response:
        parsed = self.parsed(request)
        rows = selectors.heatmap(user=request.user, filters=parsed.filters())
        return self.table(request, rows, parsed.validated_data.get("site"))


class DrilldownFilterSerializer(FilterSerializer):
    week = serializers.DateField(required=False)
    metric = serializers.ChoiceField(choices=METRIC_NAMES, required=False)
    limit = serializers.IntegerField(default=100, min_value=1, max_value=1000)
    offset = serializers.IntegerField(default=0, min_value=0, max_value=10**9)

    def filters(self) -> selectors.Filters:
        skip = {"week", "metric", "limit", "offset"}
        return selectors.Filters(**{k: v for k, v in self.validated_data.items() if k not in skip})


class DrilldownApi(DashboardApi):
    """The scored series behind a bar, heat-map cell or trend point, each with its viewer URL."""

    export_name = "series"
    filter_class = DrilldownFilterSerializer

    @extend_schema(parameters=[DrilldownFilterSerializer], responses=TableSerializer)
    def get(self, request: Request) -> Response:
        parsed = self.parsed(request)
        data = parsed.validated_data
        qs = selectors.drilldown_series(
            user=request.user,
            filters=parsed.filters(),
            week=data.get("week"),
            metric=data.get("metric"),
        )
        count = qs.count()
        page = list(qs[data["offset"] : data["offset"] + data["limit"]])
        self.accessed(page, per_study=True)
        if request.accepted_renderer.format == "csv":
            self.audit_action = AuditAction.EXPORT
        rows = [
            {
                "id": str(s.pk),
                "viewer_url": f"/series/{s.pk}/",
                "received_at": s.received_at.isoformat(),
                "week": s.week.isoformat(),
                "site": s.site.name,
                "scanner": str(s.scanner) if s.scanner else "",
                "protocol": s.protocol_key,
                "sequence_family": s.sequence_family,
                "series_number": s.series_number,
                "description": s.description,
                "instance_count": s.instance_count,
                "suitability": None if s.blind else s.suitability,
                "nondiagnostic": s.current_run.nondiagnostic
                if s.current_run and not s.blind
                else None,
            }
            for s in page
        ]
        return Response({"count": count, "columns": DRILLDOWN_COLUMNS, "rows": rows})


class AlertOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    site_id = serializers.IntegerField()
    site = serializers.CharField(source="site.name")
    scanner_id = serializers.IntegerField(allow_null=True)
    scanner = serializers.SerializerMethodField()
    metric = serializers.CharField()
    week = serializers.DateField()
    count = serializers.IntegerField()
    total = serializers.IntegerField()
    rate = serializers.FloatField()
    baseline_rate = serializers.FloatField()
    baseline_weeks = serializers.IntegerField()
    dispersion = serializers.FloatField()
    p_value = serializers.FloatField()
    threshold = serializers.FloatField()
    likely_cause = serializers.SerializerMethodField(
        help_text="What a jump of this rate most likely points at (a spike rate: hardware)."
    )
    created_at = serializers.DateTimeField()
    notified_at = serializers.DateTimeField(allow_null=True)
    acknowledged_by = serializers.SerializerMethodField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    withdrawn_at = serializers.DateTimeField(
        allow_null=True, help_text="A recount took the jump away (findings rejected, a rollback)."
    )

    def get_likely_cause(self, alert: Alert) -> str:
        return services.alert_cause(alert.metric)

    def get_scanner(self, alert: Alert) -> str:
        return str(alert.scanner) if alert.scanner else "(unknown scanner)"

    def get_acknowledged_by(self, alert: Alert) -> str | None:
        return alert.acknowledged_by.get_username() if alert.acknowledged_by else None


ALERT_COLUMNS = list(AlertOutputSerializer().fields)
DRILLDOWN_COLUMNS = [
    "id", "viewer_url", "received_at", "week", "site", "scanner", "protocol", "sequence_family",
    "series_number", "description", "instance_count", "suitability", "nondiagnostic",
]  # fmt: skip


class AlertFilterSerializer(serializers.Serializer):
    site = serializers.IntegerField(required=False)
    open = serializers.BooleanField(required=False, default=False)


class _AlertTableApi(DashboardApi):
    """A table of alerts of the caller's QA sites: ``select`` picks them, ``serializer`` shows
    them (``?site=``, ``?open=true``; CSV too)."""

    serializer: type[serializers.Serializer]

    def select(self, user: Any, site: int | None, open_only: bool) -> Any:
        raise NotImplementedError

    @extend_schema(parameters=[AlertFilterSerializer], responses=TableSerializer)
    def get(self, request: Request) -> Response:
        parsed = AlertFilterSerializer(data=request.query_params)
        parsed.is_valid(raise_exception=True)
        site = parsed.validated_data.get("site")
        alerts = self.select(request.user, site, parsed.validated_data["open"])[:200]
        rows = [dict(r) for r in self.serializer(alerts, many=True).data]
        return self.table(request, rows, site)


class AlertListApi(_AlertTableApi):
    export_name = "quality-alerts"
    columns = ALERT_COLUMNS
    serializer = AlertOutputSerializer

    def select(self, user: Any, site: int | None, open_only: bool) -> Any:
        return selectors.alert_list(user=user, site_id=site, open_only=open_only)


class AlertAcknowledgeApi(ClinicalAPIView):
    """Acknowledge an alert: who and when are recorded once, and the act is audited."""

    audit_action = AuditAction.ANNOTATE

    @extend_schema(request=None, responses=AlertOutputSerializer)
    def post(self, request: Request, alert_id: int) -> Response:
        alert = selectors.alert_get(user=request.user, alert_id=alert_id)
        alert = services.alert_acknowledge(
            alert=alert, user=cast(User, request.user), request=request._request
        )
        return Response(AlertOutputSerializer(alert).data)


class AccessAlertOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    site_id = serializers.IntegerField()
    site = serializers.CharField(source="site.name")
    user_id = serializers.IntegerField(allow_null=True)
    username = serializers.CharField()
    attempts = serializers.IntegerField()
    first_at = serializers.DateTimeField()
    last_at = serializers.DateTimeField()
    source_ips = serializers.CharField()
    created_at = serializers.DateTimeField()
    notified_at = serializers.DateTimeField(allow_null=True)
    acknowledged_by = serializers.SerializerMethodField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)

    def get_acknowledged_by(self, alert: AccessAlert) -> str | None:
        return alert.acknowledged_by.get_username() if alert.acknowledged_by else None


class AccessAlertListApi(_AlertTableApi):
    """Bursts of denied attempts on the caller's sites (their QA administrators only)."""

    export_name = "access-alerts"
    columns = list(AccessAlertOutputSerializer().fields)
    serializer = AccessAlertOutputSerializer

    def select(self, user: Any, site: int | None, open_only: bool) -> Any:
        return selectors.access_alert_list(user=user, site_id=site, open_only=open_only)


class AccessAlertAcknowledgeApi(ClinicalAPIView):
    """Acknowledge an access alert: who and when are recorded once, and the act is audited."""

    audit_action = AuditAction.ANNOTATE

    @extend_schema(request=None, responses=AccessAlertOutputSerializer)
    def post(self, request: Request, alert_id: int) -> Response:
        alert = selectors.access_alert_get(user=request.user, alert_id=alert_id)
        alert = access_alert_acknowledge(
            alert=alert, user=cast(User, request.user), request=request._request
        )
        return Response(AccessAlertOutputSerializer(alert).data)


class AlertSettingsSerializer(serializers.Serializer):
    emails = serializers.CharField(allow_blank=True, required=False, default="", max_length=2000)
    webhook_url = serializers.URLField(allow_blank=True, required=False, default="")

    def validate_emails(self, value: str) -> str:
        parts = [p.strip() for p in value.replace("\n", ",").split(",") if p.strip()]
        field = serializers.EmailField()
        for part in parts:
            field.run_validation(part)
        return ", ".join(parts)

    def validate_webhook_url(self, value: str) -> str:
        if value and not value.lower().startswith(("http://", "https://")):
            raise serializers.ValidationError("http or https only")
        if value:
            try:  # names are resolved again, and checked, every time an alert is sent
                notify.webhook_check(value, resolve=False)
            except notify.NotifyError as exc:
                raise serializers.ValidationError(
                    f"{exc}; an intranet relay must be listed in ARTISCAN_WEBHOOK_ALLOW"
                ) from None
        return value


class AlertSettingsApi(ClinicalAPIView):
    """Where a site's alerts are sent (its QA administrators only)."""

    audit_action = AuditAction.VIEW

    @extend_schema(responses=AlertSettingsSerializer)
    def get(self, request: Request, site_id: int) -> Response:
        config = selectors.alert_settings_get(user=request.user, site_id=site_id)
        return Response(AlertSettingsSerializer(config).data)

    @extend_schema(request=AlertSettingsSerializer, responses=AlertSettingsSerializer)
    def put(self, request: Request, site_id: int) -> Response:
        selectors.qa_site_get(user=request.user, site_id=site_id)
        parsed = AlertSettingsSerializer(data=request.data)
        parsed.is_valid(raise_exception=True)
        config = services.alert_settings_update(site_id=site_id, **parsed.validated_data)
        self.audit_action = AuditAction.CREATE
        self._audit_targets = [AuditTarget("alert_settings", str(site_id), site_id)]
        return Response(AlertSettingsSerializer(config).data)


class ReportFilterSerializer(serializers.Serializer):
    site = serializers.IntegerField()
    month = serializers.RegexField(r"^\d{4}-(0[1-9]|1[0-2])$", required=False)

    def validate_month(self, value: str) -> str:
        # The report's trend reaches sixteen weeks back; a year inside the bounds keeps it there.
        if not EARLIEST.year < int(value[:4]) < LATEST.year:
            raise serializers.ValidationError(
                f"must be a month of {EARLIEST.year + 1} to {LATEST.year - 1}"
            )
        return value


class MonthlyReportApi(ClinicalAPIView):
    """A printable PDF of one site's month: tables, trends with intervals, heat map, alerts."""

    audit_action = AuditAction.EXPORT

    @extend_schema(
        parameters=[ReportFilterSerializer],
        responses={(200, "application/pdf"): OpenApiResponse(description="The report")},
    )
    def get(self, request: Request) -> HttpResponse:
        parsed = ReportFilterSerializer(data=request.query_params)
        parsed.is_valid(raise_exception=True)
        site = selectors.qa_site_get(user=request.user, site_id=parsed.validated_data["site"])
        month = parsed.validated_data.get("month")
        today = dt.date.today()
        year, mon = (int(x) for x in month.split("-")) if month else (today.year, today.month)
        pdf = monthly_report_pdf(user=request.user, site=site, year=year, month=mon)
        self._audit_targets = [AuditTarget("dashboard", "monthly-report", site.pk)]
        response = HttpResponse(pdf, content_type="application/pdf")
        response["Content-Disposition"] = (
            f'attachment; filename="artiscan-{site.slug}-{year:04d}-{mon:02d}.pdf"'
        )
        return response
