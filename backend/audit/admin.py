from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from backend.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin[AuditEvent]):
    """Read-only: nobody edits or deletes the audit trail through the app."""

    list_display = ["at", "username", "site_id", "action", "outcome", "object_type", "study_uid"]
    list_filter = ["action", "outcome", "site_id"]
    search_fields = ["username", "study_uid", "request_id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
