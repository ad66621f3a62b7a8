from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from backend.ingest.models import DicomSender, OrthancSource, QuarantinedFile


@admin.register(QuarantinedFile)
class QuarantinedFileAdmin(admin.ModelAdmin[QuarantinedFile]):
    """Superusers only: a quarantined original may still carry patient data."""

    list_display = ["received_at", "site", "source", "reason", "size_bytes", "expires_at"]
    list_filter = ["source", "site"]
    readonly_fields = [f.name for f in QuarantinedFile._meta.fields]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DicomSender)
class DicomSenderAdmin(admin.ModelAdmin[DicomSender]):
    list_display = ["ae_title", "site", "host", "any_host", "is_active", "description"]
    list_filter = ["site", "is_active"]


@admin.register(OrthancSource)
class OrthancSourceAdmin(admin.ModelAdmin[OrthancSource]):
    list_display = ["url", "site", "is_active", "last_change", "last_polled_at", "last_error"]
    readonly_fields = ["last_change", "last_polled_at", "last_error"]
