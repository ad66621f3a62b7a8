"""What an administrator looks at: quarantined slices (with why), the model registry and its
promotion history, re-scoring jobs. Read-only: changes go through the services (audited)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from backend.scoring.models import ModelPromotion, ModelVersion, RescoreJob, SliceAttempt


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SliceAttempt)
class SliceAttemptAdmin(_ReadOnly):
    list_display = ["instance", "model_version", "site", "attempts", "quarantined", "error"]
    list_filter = ["quarantined", "site", "model_version"]


@admin.register(ModelVersion)
class ModelVersionAdmin(_ReadOnly):
    list_display = ["name", "version", "is_deployed", "sha256", "created_at"]


@admin.register(ModelPromotion)
class ModelPromotionAdmin(_ReadOnly):
    list_display = ["created_at", "kind", "model_version", "previous", "promoted_by", "reason"]


@admin.register(RescoreJob)
class RescoreJobAdmin(_ReadOnly):
    list_display = ["created_at", "model_version", "done", "total", "finished_at"]
