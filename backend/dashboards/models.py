"""Weekly quality rollups per site × scanner × protocol, the alerts raised on them, and the
access alerts raised on the audit trail's denials (``access.py``).

Rollups are derived data: ``services.rollups_refresh`` rebuilds the cells of every (site, week)
touched since its last pass, so they can always be thrown away and rebuilt from the scores. They
hold counts and sums, never rates, so any grouping (a scanner over all protocols, a quarter) adds
up exactly and the confidence intervals are computed from the counts.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from backend.accounts.models import Site
from backend.scoring.models import ARTIFACT_TYPE_CHOICES
from backend.studies.models import Scanner

NONDIAGNOSTIC = "nondiagnostic"
METRIC_CHOICES = [(NONDIAGNOSTIC, "non-diagnostic"), *ARTIFACT_TYPE_CHOICES]


class QualityRollup(models.Model):
    """One cell: the scored series of one site, scanner, protocol and ISO week (Monday)."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="+")
    scanner = models.ForeignKey(
        Scanner, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    protocol = models.CharField(max_length=128)
    sequence_family = models.CharField(max_length=32, blank=True)
    week = models.DateField(help_text="Monday of the ISO week the series arrived in.")
    series_scored = models.IntegerField()
    series_nondiagnostic = models.IntegerField()
    series_repeated = models.IntegerField(
        help_text="Series whose protocol had already been acquired earlier in the same study."
    )
    suitability_sum = models.FloatField()
    instances_scored = models.IntegerField()
    verdict_seconds_sum = models.FloatField(help_text="Sum over instances of arrival → verdict.")

    class Meta:
        indexes = [
            models.Index(fields=["site", "week"], name="rollup_site_week"),
            models.Index(fields=["site", "scanner", "week"], name="rollup_scanner_week"),
        ]

    def __str__(self) -> str:
        return f"{self.site_id}/{self.scanner_id}/{self.protocol}/{self.week}"


class ArtifactRollup(models.Model):
    """How many series of a cell have at least one finding of one artifact type."""

    rollup = models.ForeignKey(QualityRollup, on_delete=models.CASCADE, related_name="artifacts")
    artifact_type = models.CharField(max_length=32, choices=ARTIFACT_TYPE_CHOICES)
    series_with = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rollup", "artifact_type"], name="artifact_rollup_once")
        ]

    def __str__(self) -> str:
        return f"{self.artifact_type}: {self.series_with}"


class RollupState(models.Model):
    """The refresh watermark: series changed after it have not been rolled up yet."""

    name = models.CharField(max_length=32, unique=True, default="default")
    watermark = models.DateTimeField(null=True, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"rollups up to {self.watermark}"


class AlertSettings(models.Model):
    """Where a site's alerts go besides the dashboard: e-mail addresses and/or one webhook."""

    site = models.OneToOneField(Site, on_delete=models.CASCADE, related_name="alert_settings")
    emails = models.TextField(blank=True, help_text="Comma- or newline-separated addresses.")
    webhook_url = models.URLField(blank=True, help_text="POSTed a JSON body per alert.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "alert settings"

    def __str__(self) -> str:
        return f"alert settings of {self.site}"

    @property
    def email_list(self) -> list[str]:
        parts = self.emails.replace("\n", ",").split(",")
        return [p.strip() for p in parts if p.strip()]


class Alert(models.Model):
    """A weekly rate on one scanner that jumped against its own trailing weeks."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="quality_alerts")
    scanner = models.ForeignKey(
        Scanner, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    metric = models.CharField(max_length=32, choices=METRIC_CHOICES)
    week = models.DateField()
    count = models.IntegerField(help_text="Series of the week with the metric.")
    total = models.IntegerField(help_text="Series scored that week.")
    baseline_count = models.IntegerField()
    baseline_total = models.IntegerField()
    baseline_weeks = models.IntegerField()
    dispersion = models.FloatField(help_text="Over-dispersion of the trailing weeks (≥ 1).")
    p_value = models.FloatField()
    threshold = models.FloatField(help_text="Bonferroni-corrected significance level.")
    created_at = models.DateTimeField(auto_now_add=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the e-mail went (a retry for the webhook skips it)."
    )
    notify_error = models.CharField(max_length=300, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    withdrawn_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a recount (findings rejected, a model rolled back) took the jump away; "
        "cleared if it comes back.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["site", "scanner", "metric", "week"], name="alert_once_per_week"
            )
        ]
        indexes = [models.Index(fields=["site", "-week"], name="alert_site_week")]

    def __str__(self) -> str:
        return f"{self.metric} on scanner {self.scanner_id} in week {self.week}"

    @property
    def rate(self) -> float:
        return self.count / self.total if self.total else 0.0

    @property
    def baseline_rate(self) -> float:
        return self.baseline_count / self.baseline_total if self.baseline_total else 0.0


class AccessAlert(models.Model):
    """A burst of denied attempts on one site's data by one user: someone trying studies they
    may not see, one after another (security checklist L-02). Raised from the audit trail by
    ``access.access_alerts_evaluate``; sent like a quality alert (the site's ``AlertSettings``)."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="access_alerts")
    # Plain values, as on the audit trail: the alert outlives the account.
    user_id = models.BigIntegerField(null=True)
    username = models.CharField(max_length=150)
    attempts = models.IntegerField(help_text="Denied attempts within the window.")
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()
    source_ips = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    notify_error = models.CharField(max_length=300, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["site", "-created_at"], name="access_alert_site")]

    def __str__(self) -> str:
        return f"{self.attempts} denied attempts by {self.username} on {self.site}"
