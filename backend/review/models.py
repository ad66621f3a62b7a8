"""The radiologists' review: every action is a history row (who, when, what), never an update.

``Finding.review_state`` (scoring app) holds the latest finding action for fast lists; the rows
here are the record. A corrected mask is a new PNG in the encrypted store, addressed by the row;
the model's original (``Finding.mask_key``) is never overwritten.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from backend.accounts.models import Site
from backend.scoring.models import Finding
from backend.studies.models import Series


class FindingAction(models.TextChoices):
    ACCEPT = "accept", "Accept"
    CORRECT = "correct", "Correct the mask"
    REJECT = "reject", "Reject"


class FindingReview(models.Model):
    finding = models.ForeignKey(Finding, on_delete=models.CASCADE, related_name="reviews")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="finding_reviews")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="finding_reviews"
    )
    action = models.CharField(max_length=16, choices=FindingAction.choices)
    comment = models.CharField(max_length=1000, blank=True)
    mask_key = models.CharField(
        max_length=255, blank=True, help_text="The corrected mask (CORRECT only), a new version."
    )
    mask_area_px = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["finding", "-created_at"], name="finding_review_latest"),
            # The dashboards' refresh asks for the reviews since its last pass.
            models.Index(fields=["created_at"], name="finding_review_time"),
        ]

    def __str__(self) -> str:
        return f"{self.action} of finding {self.finding_id} by {self.user_id}"


class SeriesVerdict(models.TextChoices):
    DIAGNOSTIC = "diagnostic", "Diagnostic"
    NONDIAGNOSTIC = "nondiagnostic", "Non-diagnostic"


class SeriesReview(models.Model):
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="reviews")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="series_reviews")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="series_reviews"
    )
    verdict = models.CharField(max_length=16, choices=SeriesVerdict.choices)
    comment = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["series", "-created_at"], name="series_review_latest")]

    def __str__(self) -> str:
        return f"{self.verdict} for series {self.series_id} by {self.user_id}"
