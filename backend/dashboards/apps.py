from django.apps import AppConfig


class DashboardsConfig(AppConfig):
    name = "backend.dashboards"
    label = "dashboards"
    verbose_name = "Site-quality dashboards and alerts"
