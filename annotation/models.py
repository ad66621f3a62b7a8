"""Annotation campaigns: who reads which series, what they drew, what was adjudicated, and the
training sets and fine-tuned models made from it.

Everything carries its site (a campaign belongs to one site and only ever holds that site's
series), so every read is scoped like the clinical data (``_scoped``). Masks are 1-bit PNGs in
the encrypted store (``backend.scoring.masks``); rows hold only their storage keys.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from backend.accounts.models import Site
from backend.studies.models import Instance, Series


class CampaignStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    CLOSED = "closed", "Closed"


class Campaign(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="campaigns")
    name = models.CharField(max_length=200)
    instructions = models.TextField(blank=True)
    artifact_types = models.JSONField(default=list, help_text="Canonical type names to annotate.")
    readers_per_image = models.PositiveSmallIntegerField(
        default=2, validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    blinded = models.BooleanField(
        default=True, help_text="Readers see neither the model's masks nor each other's."
    )
    deadline = models.DateField(null=True, blank=True)
    query = models.JSONField(default=dict, blank=True, help_text="How the series were chosen.")
    disagreement_iou = models.FloatField(
        default=0.5, help_text="Readers disagree on a type when their masks' IoU is below this."
    )
    status = models.CharField(
        max_length=16, choices=CampaignStatus.choices, default=CampaignStatus.ACTIVE
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    readers = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="+", blank=True, help_text="The reader pool."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["site", "-created_at"], name="campaign_site")]

    def __str__(self) -> str:
        return self.name


class CampaignSeries(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="items")
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    position = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "series"], name="campaign_series_once")
        ]
        ordering = ["position"]

    def __str__(self) -> str:
        return f"{self.campaign_id}: {self.series_id}"


class AssignmentStatus(models.TextChoices):
    PENDING = "pending", "To do"
    IN_PROGRESS = "in_progress", "In progress"
    DONE = "done", "Done"
    SKIPPED = "skipped", "Skipped"


class Assignment(models.Model):
    """One reader reading one series of a campaign; ``position`` orders the reader's queue."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="assignments")
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    reader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="assignments"
    )
    position = models.IntegerField()
    status = models.CharField(
        max_length=16, choices=AssignmentStatus.choices, default=AssignmentStatus.PENDING
    )
    skip_reason = models.CharField(max_length=300, blank=True)
    last_instance = models.ForeignKey(
        Instance, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "series", "reader"], name="assignment_once")
        ]
        indexes = [models.Index(fields=["reader", "status", "position"], name="reader_queue")]
        ordering = ["position"]

    def __str__(self) -> str:
        return f"{self.reader} on {self.series_id}"


class MaskSource(models.TextChoices):
    EMPTY = "empty", "Drawn from empty"
    MODEL = "model", "Started from the model's mask"
    ASSIST = "assist", "Model re-run on the slice (with hints)"
    PREVIOUS = "previous", "Edited from the previous version"
    PICK = "pick", "Adjudication: one reader's masks"
    MAJORITY = "majority", "Adjudication: majority vote"
    STAPLE = "staple", "Adjudication: STAPLE"
    REDRAW = "redraw", "Adjudication: redrawn"


class Annotation(models.Model):
    """One saved version of one reader's reading of one slice (never updated: a new save is a
    new version). ``masks`` maps a type to the storage key of its PNG; types absent are empty."""

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="annotations")
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    version = models.IntegerField()
    masks = models.JSONField(default=dict)
    mask_pixels = models.JSONField(default=dict, help_text="Pixels per type, for the lists.")
    types_present = models.JSONField(default=list)
    diagnostic = models.BooleanField(null=True)
    confidence = models.PositiveSmallIntegerField(
        null=True, validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    source = models.CharField(max_length=16, choices=MaskSource.choices, default=MaskSource.EMPTY)
    time_spent_ms = models.IntegerField(default=0, help_text="On this slice since the last save.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["assignment", "instance", "version"], name="annotation_version_once"
            )
        ]
        indexes = [models.Index(fields=["assignment", "instance", "-version"], name="ann_latest")]

    def __str__(self) -> str:
        return f"{self.instance_id} v{self.version} by {self.created_by_id}"


class Adjudication(models.Model):
    """The campaign's answer for one slice where readers disagreed, versioned like readings."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="adjudications")
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    version = models.IntegerField()
    method = models.CharField(max_length=16, choices=MaskSource.choices)
    picked = models.ForeignKey(
        Annotation, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    masks = models.JSONField(default=dict)
    mask_pixels = models.JSONField(default=dict)
    types_present = models.JSONField(default=list)
    diagnostic = models.BooleanField(null=True)
    adjudicator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "instance", "version"], name="adjudication_version_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.instance_id} v{self.version} ({self.method})"


class TrainingSet(models.Model):
    """An exported, immutable training set (``python -m ml dataset`` layout) and its checksum."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="training_sets")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    version = models.IntegerField()
    path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    simulated_ratio = models.FloatField(default=0.0)
    annotated_slices = models.JSONField(default=dict, help_text="Slices per split.")
    simulated_slices = models.IntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "version"], name="training_set_version")
        ]

    def __str__(self) -> str:
        return f"training set {self.campaign_id} v{self.version}"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class FineTune(models.Model):
    """Fine-tuning the deployed model on a training set, then evaluating both side by side."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    training_set = models.ForeignKey(TrainingSet, on_delete=models.PROTECT, related_name="runs")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    base_model = models.ForeignKey(
        "scoring.ModelVersion", on_delete=models.PROTECT, related_name="+", null=True
    )
    params = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    message = models.CharField(max_length=300, blank=True)
    out_dir = models.CharField(max_length=500, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    candidate = models.ForeignKey(
        "scoring.ModelVersion", on_delete=models.SET_NULL, null=True, related_name="+"
    )
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"fine-tune {self.pk} ({self.status})"
