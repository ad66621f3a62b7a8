from django.contrib import admin

from backend.dashboards.models import AccessAlert, Alert, AlertSettings


@admin.register(AlertSettings)
class AlertSettingsAdmin(admin.ModelAdmin[AlertSettings]):
    list_display = ("site", "emails", "webhook_url", "updated_at")


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin[Alert]):
    list_display = (
        "week",
        "site",
        "scanner",
        "metric",
        "count",
        "total",
        "p_value",
        "acknowledged_at",
    )
    list_filter = ("site", "metric")
    readonly_fields = [f.name for f in Alert._meta.fields]


@admin.register(AccessAlert)
class AccessAlertAdmin(admin.ModelAdmin[AccessAlert]):
    list_display = ("created_at", "site", "username", "attempts", "first_at", "last_at")
    list_filter = ("site",)
    readonly_fields = [f.name for f in AccessAlert._meta.fields]
