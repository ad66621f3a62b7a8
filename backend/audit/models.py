"""The audit trail: one row per access to a study (DICOM PS3.15 A.5.3.6 "Instances Accessed").

Rows are append-only. The model refuses updates and deletes, the admin is read-only and, on
PostgreSQL, a trigger refuses UPDATE and DELETE from any client (migration 0002).
"""

from __future__ import annotations

from typing import Any

from django.db import models


class AuditAction(models.TextChoices):
    VIEW = "view", "View"
    LIST = "list", "List"
    DOWNLOAD = "download", "Download"
    CREATE = "create", "Create"
    ANNOTATE = "annotate", "Annotate"
    EXPORT = "export", "Export"
    DELETE = "delete", "Delete"


class AuditOutcome(models.TextChoices):
    SUCCESS = "success", "Success"
    DENIED = "denied", "Denied"


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise PermissionError("The audit trail is append-only.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionError("The audit trail is append-only.")


class AuditEvent(models.Model):
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Plain values, not foreign keys: deleting a user or a site must not rewrite history.
    user_id = models.BigIntegerField(null=True)
    username = models.CharField(max_length=150)
    roles = models.CharField(max_length=200, blank=True)
    site_id = models.BigIntegerField(null=True, db_index=True)
    action = models.CharField(max_length=16, choices=AuditAction.choices)
    outcome = models.CharField(max_length=16, choices=AuditOutcome.choices)
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=64)
    study_uid = models.CharField(max_length=64, blank=True, help_text="Pseudonymous study UID.")
    source_ip = models.GenericIPAddressField(null=True)
    request_id = models.CharField(max_length=36, blank=True)

    objects = AuditEventQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.object_type}"

    class Meta:
        indexes = [models.Index(fields=["site_id", "-at"], name="audit_site_time")]
        ordering = ["-at", "-id"]

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise PermissionError("The audit trail is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("The audit trail is append-only.")
