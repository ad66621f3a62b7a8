from django.contrib import admin

from backend.dashboards.models import Alert, AlertSettings


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
