"""Rejected originals, kept encrypted for a while so an administrator can see what was refused.

The original may carry patient data (it was refused before de-identification finished), so the
file lives only in the encrypted store, this row holds no header value, and only superusers see
the quarantine. ``manage.py quarantine_purge`` deletes rows and files past their expiry.
"""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.db import models

from backend.accounts.models import Site, User


class QuarantinedFile(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="quarantine")
    source = models.CharField(max_length=16, help_text="upload, stow, cstore, orthanc")
    reason = models.CharField(max_length=300)
    storage_key = models.CharField(max_length=255)
    size_bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    received_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["site", "-received_at"], name="quarantine_site")]

    def __str__(self) -> str:
        return f"{self.source} file refused: {self.reason}"


class DicomSender(models.Model):
    """A modality or PACS allowed to C-STORE to us, and the site its images belong to.

    An association is accepted only from an AE title listed here and from its ``host``; a
    sender with no host is refused unless it says ``any_host``, an explicit choice for a trusted
    network (an AE title is a name anyone can claim). Everything else is rejected before any
    data is sent (security checklist O-04).
    """

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="dicom_senders")
    ae_title = models.CharField(max_length=16, unique=True)
    host = models.GenericIPAddressField(null=True, blank=True, help_text="Only from this address.")
    any_host = models.BooleanField(
        default=False,
        help_text="Accept this AE title from any address: only where nobody else on the "
        "network can send DICOM (anyone can claim an AE title).",
    )
    description = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)

    def clean(self) -> None:
        if not self.host and not self.any_host:
            raise ValidationError(
                {"host": "Give the sender's address, or accept it from any host (any_host)."}
            )

    def accepts_from(self, address: str) -> bool:
        """Whether an association of this sender's AE title from ``address`` is accepted."""
        return self.any_host or (bool(self.host) and self.host == address)

    def __str__(self) -> str:
        return f"{self.ae_title} → {self.site}"


class OrthancSource(models.Model):
    """An Orthanc whose ``/changes`` feed we follow for one site: every ``StableSeries`` is
    fetched, ingested and, if asked, deleted from Orthanc. ``last_change`` survives restarts, so
    the follower resumes where it stopped and ingests each change once (re-ingesting an
    instance would be a harmless duplicate anyway)."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="orthanc_sources")
    url = models.URLField(help_text="e.g. http://orthanc.hospital.lan:8042")
    username = models.CharField(max_length=100, blank=True)
    password_env = models.CharField(
        max_length=100, blank=True, help_text="Name of the environment variable with the password."
    )
    delete_after_ingest = models.BooleanField(default=False)
    last_change = models.BigIntegerField(default=0)
    is_active = models.BooleanField(default=True)
    last_error = models.CharField(max_length=300, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.url} → {self.site}"


class UploadStatus(models.TextChoices):
    RECEIVING = "receiving", "Receiving"
    QUEUED = "queued", "Queued"
    PROCESSING = "processing", "Processing"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Upload(models.Model):
    """One file sent from the upload page (a DICOM file or a zip of up to 1,000), in chunks.

    Chunks wait in the encrypted store until the last one arrives; then a ``cpu`` worker
    de-identifies and ingests every file and deletes the chunks. ``results`` holds one entry per
    file: its name within the upload, accepted / duplicate / rejected and the reason.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="uploads")
    user = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="uploads")
    filename = models.CharField(max_length=200)
    size = models.BigIntegerField()
    received = models.BigIntegerField(default=0)
    chunks = models.IntegerField(default=0)
    chunk_sizes = models.JSONField(
        default=list, blank=True, help_text="Bytes of each chunk, in order (read in place)."
    )
    status = models.CharField(
        max_length=16, choices=UploadStatus.choices, default=UploadStatus.RECEIVING
    )
    files_total = models.IntegerField(default=0)
    files_done = models.IntegerField(default=0)
    results = models.JSONField(default=list, blank=True)
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True, help_text="When it was completed.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["site", "-created_at"], name="upload_site")]

    def __str__(self) -> str:
        return f"upload {self.pk} ({self.status})"
