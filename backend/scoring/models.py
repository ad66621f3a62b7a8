"""Models, scoring runs and what they found."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from backend.accounts.models import Site
from backend.studies.models import Instance, Series

ARTIFACT_TYPE_CHOICES = [
    (name, name.replace("_", " "))
    for name in (
        "motion",
        "ghosting",
        "aliasing",
        "chemical_shift",
        "susceptibility",
        "zipper",
        "spike",
        "gibbs",
        "bias_field",
        "noise",
    )
]


class ModelVersion(models.Model):
    """One trained weight file; at most one is deployed at a time."""

    name = models.CharField(max_length=64)
    version = models.CharField(max_length=32)
    sha256 = models.CharField(max_length=64, unique=True)
    weights_key = models.CharField(max_length=255)
    classes = models.JSONField(default=list)
    metrics = models.JSONField(default=dict, blank=True)
    card = models.TextField(blank=True, help_text="Model card: how the weights were trained.")
    is_deployed = models.BooleanField(default=False)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="model_unique_version"),
            models.UniqueConstraint(
                fields=["is_deployed"],
                condition=models.Q(is_deployed=True),
                name="model_one_deployed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ScoringRun(models.Model):
    """Scoring one series with one model version. Instances are scored incrementally as they
    arrive (a late slice adds its score to the same run); exactly-once per instance and model
    version comes from the unique keys below, whatever Celery redelivers."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="scoring_runs")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="scoring_runs")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="runs")
    reason = models.CharField(max_length=300, blank=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    suitability = models.FloatField(null=True, blank=True)
    nondiagnostic = models.BooleanField(null=True, blank=True)
    # The same index restricted to the series' current region of interest (null without one).
    roi_suitability = models.FloatField(null=True, blank=True)
    roi_reason = models.CharField(max_length=300, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["series", "model_version"], name="run_exactly_once")
        ]
        indexes = [models.Index(fields=["site", "status", "created_at"], name="run_status")]


class InstanceScore(models.Model):
    run = models.ForeignKey(ScoringRun, on_delete=models.CASCADE, related_name="instance_scores")
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="scores")
    frame = models.PositiveIntegerField(
        default=1,
        help_text="The frame number (1-based, as in WADO-RS and a SEG's ReferencedFrameNumber): "
        "an Enhanced MR instance has one score per frame, a classic one a single score, frame 1.",
    )
    suitability = models.FloatField()
    nondiagnostic = models.BooleanField()
    reason = models.CharField(max_length=300, blank=True)
    # Restricted to the region of interest: null without a region, or for a slice outside its
    # instance-number range.
    roi_suitability = models.FloatField(null=True, blank=True)
    roi_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.instance_id} frame {self.frame}: {self.suitability:.2f}"

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "instance", "frame"], name="instance_score_once")
        ]


class ReviewState(models.TextChoices):
    PENDING = "pending", "Pending review"
    ACCEPTED = "accepted", "Accepted"
    CORRECTED = "corrected", "Corrected"
    REJECTED = "rejected", "Rejected"


class Finding(models.Model):
    """One artifact type on one instance: where (a mask in the store) and how much."""

    run = models.ForeignKey(ScoringRun, on_delete=models.CASCADE, related_name="findings")
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="findings")
    frame = models.PositiveIntegerField(default=1, help_text="The frame number (1-based).")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="findings")
    artifact_type = models.CharField(max_length=32, choices=ARTIFACT_TYPE_CHOICES)
    mask_key = models.CharField(max_length=255, blank=True)
    area_px = models.IntegerField()
    area_mm2 = models.FloatField(null=True, blank=True)
    area_fraction = models.FloatField(help_text="Mask area over the image area.")
    head_fraction = models.FloatField(default=0.0, help_text="Share of the head the mask covers.")
    bbox = models.JSONField(default=list, help_text="[row0, col0, row1, col1], end exclusive.")
    confidence = models.FloatField()
    advice = models.TextField(blank=True)
    review_state = models.CharField(
        max_length=16, choices=ReviewState.choices, default=ReviewState.PENDING
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.artifact_type} on {self.instance_id} frame {self.frame}"

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "instance", "frame", "artifact_type"], name="finding_once"
            )
        ]
        indexes = [
            models.Index(fields=["site", "artifact_type", "created_at"], name="finding_qa"),
        ]


class SeriesRegionOfInterest(models.Model):
    """The region of diagnostic interest a radiologist marked on a series.

    A polygon in image pixel coordinates ``[[col, row], ...]`` applied to the slices whose
    InstanceNumber lies in ``[first_instance, last_instance]`` (null = unbounded). Rows are kept
    when replaced or cleared (who and when); one row per series is current (``cleared_at`` null).
    """

    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="rois")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    polygon = models.JSONField(help_text="[[col, row], ...] in image pixel coordinates.")
    first_instance = models.IntegerField(null=True, blank=True)
    last_instance = models.IntegerField(null=True, blank=True)
    frame = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Only this frame (1-based) of the instances in range: one slice of an "
        "Enhanced MR instance. Null: every frame.",
    )
    set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    set_at = models.DateTimeField(default=timezone.now)
    cleared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["series"],
                condition=models.Q(cleared_at__isnull=True),
                name="roi_one_current",
            )
        ]

    def __str__(self) -> str:
        return f"ROI of {self.series_id} ({len(self.polygon)} points)"

    def covers(self, instance_number: int | None, frame: int = 1) -> bool:
        """Whether a slice (this InstanceNumber, this frame) is inside the region's slice
        range."""
        if self.frame is not None and frame != self.frame:
            return False
        if self.first_instance is None and self.last_instance is None:
            return True
        if instance_number is None:
            return False
        if self.first_instance is not None and instance_number < self.first_instance:
            return False
        return self.last_instance is None or instance_number <= self.last_instance


class SliceAttempt(models.Model):
    """Scoring attempts of one instance with one model version: the per-slice poison-pill guard.

    A worker claims the slices it is about to score (``attempts`` + 1, committed before the
    model runs, so a worker killed mid-slice still leaves the count); a slice that reaches
    ``ARTISCAN_SCORING_MAX_ATTEMPTS`` without a result is quarantined with its reason instead of
    being tried again, and the rest of its series is scored without it.
    """

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="attempts")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    attempts = models.IntegerField(default=0)
    claimed_by = models.CharField(max_length=64, blank=True, help_text="Celery task id.")
    claimed_until = models.DateTimeField(null=True, blank=True)
    quarantined = models.BooleanField(default=False)
    error = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["instance", "model_version"], name="slice_attempt_once")
        ]
        indexes = [models.Index(fields=["site", "quarantined"], name="slice_quarantine")]

    def __str__(self) -> str:
        state = "quarantined" if self.quarantined else f"{self.attempts} attempts"
        return f"{self.instance_id} with {self.model_version_id}: {state}"


class PromotionKind(models.TextChoices):
    PROMOTE = "promote", "Promote"
    ROLLBACK = "rollback", "Rollback"
    INITIAL = "initial", "Initial default"


class ModelPromotion(models.Model):
    """Who deployed which model version, replacing which, and why (append-only)."""

    kind = models.CharField(max_length=16, choices=PromotionKind.choices)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    previous = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.model_version} ({self.created_at:%Y-%m-%d %H:%M})"


class RescoreJob(models.Model):
    """Re-scoring a set of series with one model version, on demand; ``done`` of ``total``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    series_ids = models.JSONField(default=list)
    total = models.IntegerField(default=0)
    done = models.IntegerField(default=0)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"rescore {self.pk} with {self.model_version}: {self.done}/{self.total}"
