"""Models, scoring runs and what they found."""

from __future__ import annotations

import uuid

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
    suitability = models.FloatField()
    nondiagnostic = models.BooleanField()
    reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.instance_id}: {self.suitability:.2f}"

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "instance"], name="instance_score_once")
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
        return f"{self.artifact_type} on {self.instance_id}"

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "instance", "artifact_type"], name="finding_once"
            )
        ]
        indexes = [
            models.Index(fields=["site", "artifact_type", "created_at"], name="finding_qa"),
        ]
