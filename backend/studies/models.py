"""De-identified imaging data: scanners, studies, series and instances.

Nothing here identifies a patient. UIDs are the pseudonymous replacements made at ingest, the
scanner is known by a keyed pseudonym, descriptions are the cleaned ones. Acquisition values the
operator advice needs (field strength, bandwidth, phase-encode direction, FOV, matrix, TE/TR/TI)
are kept per instance, since they can vary within a series (multi-echo, localisers).
"""

from __future__ import annotations

import uuid

from django.db import models

from backend.accounts.models import Site


class Scanner(models.Model):
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="scanners")
    pseudonym = models.CharField(max_length=64, help_text="Keyed hash of station name + serial.")
    label = models.CharField(max_length=100, blank=True, help_text="Site-chosen display name.")
    manufacturer = models.CharField(max_length=64, blank=True)
    model_name = models.CharField(max_length=64, blank=True)
    field_strength_t = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["site", "pseudonym"], name="scanner_unique_pseudonym")
        ]

    def __str__(self) -> str:
        return self.label or f"scanner {self.pseudonym[:8]}"


class Study(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="studies")
    study_uid = models.CharField(max_length=64, help_text="Pseudonymous StudyInstanceUID.")
    description = models.CharField(max_length=128, blank=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Week of acquisition only (Safe Harbor keeps the year; the QA dashboards need weeks).
    acquired_week = models.DateField(null=True, blank=True)
    # The patient pseudonym of the study's files (``backend.deid.profile.patient_pseudonym``, the
    # de-identified PatientID): one study holds one patient, and the door refuses a file of
    # another (security checklist D-12). Empty for a study recorded before it was kept.
    patient_pseudonym = models.CharField(max_length=32, blank=True, default="")
    # As the de-identified files hold them (the date shifted by the patient's keyed offset), for
    # QIDO-RS to match and return: StudyDate, StudyTime.
    study_date = models.DateField(null=True, blank=True)
    study_time = models.CharField(max_length=16, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["site", "study_uid"], name="study_unique_uid_per_site")
        ]
        indexes = [
            models.Index(fields=["site", "-received_at"], name="study_worklist"),
            # A UID the caller may not see is looked up in every site for the audit trail
            # (``studies.selectors._owner``): from the study down, one unique index per level.
            models.Index(fields=["study_uid"], name="study_uid"),
        ]
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return f"study {self.study_uid}"


class SeriesStatus(models.TextChoices):
    RECEIVING = "receiving", "Receiving"
    COMPLETE = "complete", "Complete"
    SCORING = "scoring", "Scoring"
    SCORED = "scored", "Scored"
    FAILED = "failed", "Failed"
    QUARANTINED = "quarantined", "Quarantined"


class Series(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    # Denormalised from the study: every scoped query filters on it without a join.
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="series")
    scanner = models.ForeignKey(
        Scanner, on_delete=models.SET_NULL, null=True, blank=True, related_name="series"
    )
    series_uid = models.CharField(max_length=64, help_text="Pseudonymous SeriesInstanceUID.")
    series_number = models.IntegerField(null=True, blank=True)
    modality = models.CharField(max_length=16, default="MR")
    description = models.CharField(max_length=128, blank=True)
    protocol = models.CharField(max_length=128, blank=True, help_text="Normalised protocol name.")
    sequence_family = models.CharField(max_length=32, blank=True, help_text="SE, GRE, FLAIR, …")
    status = models.CharField(
        max_length=16, choices=SeriesStatus.choices, default=SeriesStatus.RECEIVING
    )
    instance_count = models.IntegerField(default=0)
    suitability = models.FloatField(
        null=True,
        blank=True,
        help_text="Series suitability of the current scoring run (1 = fully).",
    )
    current_run = models.ForeignKey(
        "scoring.ScoringRun", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    received_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["study", "series_uid"], name="series_unique_uid")
        ]
        indexes = [
            models.Index(fields=["site", "-received_at"], name="series_worklist"),
            models.Index(fields=["site", "status"], name="series_status"),
            models.Index(fields=["site", "scanner", "protocol", "received_at"], name="series_qa"),
            # QIDO-RS by SeriesInstanceUID without its study: the unique (study, series_uid)
            # index cannot serve it.
            models.Index(fields=["series_uid", "site"], name="series_uid_site"),
        ]
        verbose_name_plural = "series"

    def __str__(self) -> str:
        return f"series {self.series_uid}"


class PhaseEncode(models.TextChoices):
    ROW = "ROW", "Along rows (array axis 1)"
    COL = "COL", "Along columns (array axis 0)"


class Instance(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="instances")
    sop_uid = models.CharField(max_length=64, help_text="Pseudonymous SOPInstanceUID.")
    sop_class_uid = models.CharField(max_length=64)
    instance_number = models.IntegerField(null=True, blank=True)
    storage_key = models.CharField(max_length=255, help_text="Key of the de-identified file.")
    size_bytes = models.BigIntegerField(default=0)
    frame_count = models.IntegerField(default=1)
    rows = models.IntegerField()
    columns = models.IntegerField()
    # Acquisition values the advice needs, in DICOM units.
    field_strength_t = models.FloatField(null=True, blank=True)
    pixel_bandwidth_hz = models.FloatField(null=True, blank=True)
    phase_encode_direction = models.CharField(max_length=3, choices=PhaseEncode.choices, blank=True)
    pixel_spacing_row_mm = models.FloatField(null=True, blank=True)
    pixel_spacing_col_mm = models.FloatField(null=True, blank=True)
    slice_thickness_mm = models.FloatField(null=True, blank=True)
    echo_time_ms = models.FloatField(null=True, blank=True)
    repetition_time_ms = models.FloatField(null=True, blank=True)
    inversion_time_ms = models.FloatField(null=True, blank=True)
    flip_angle_deg = models.FloatField(null=True, blank=True)
    suitability = models.FloatField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["series", "sop_uid"], name="instance_unique_uid")
        ]
        indexes = [
            models.Index(fields=["series", "instance_number"], name="instance_order"),
            # The unscored sweep looks at the last day's arrivals every minute.
            models.Index(fields=["received_at"], name="instance_received"),
            # QIDO-RS by SOPInstanceUID without its study or series (a viewer resolving a
            # reference): the unique (series, sop_uid) index cannot serve it. With the site as
            # its second column SQLite, which keeps no statistics, prefers it to the site's
            # own index (one equality more).
            models.Index(fields=["sop_uid", "site"], name="instance_sop_uid_site"),
        ]

    def __str__(self) -> str:
        return f"instance {self.sop_uid}"

    @property
    def fov_mm(self) -> tuple[float, float] | None:
        if self.pixel_spacing_row_mm is None or self.pixel_spacing_col_mm is None:
            return None
        return (self.rows * self.pixel_spacing_row_mm, self.columns * self.pixel_spacing_col_mm)


class InstanceMetadata(models.Model):
    """An instance's WADO-RS metadata (DICOM JSON, PS3.18 F.2, bulk data left out), as the exact
    text the endpoint returns, made once at ingest rather than by decrypting and parsing the file
    at every request. In a table of its own so that instance queries do not carry it."""

    instance = models.OneToOneField(
        Instance, on_delete=models.CASCADE, primary_key=True, related_name="metadata"
    )
    dicom_json = models.TextField()

    def __str__(self) -> str:
        return f"metadata of instance {self.instance_id}"
