from django.urls import URLPattern, URLResolver, path

from backend.dashboards import apis, views

urlpatterns: list[URLPattern | URLResolver] = [
    path("dashboards/", views.dashboard, name="dashboards"),
    path("api/dashboards/summary/", apis.SummaryApi.as_view(), name="api-dashboards-summary"),
    path("api/dashboards/trend/", apis.TrendApi.as_view(), name="api-dashboards-trend"),
    path("api/dashboards/worst/", apis.WorstApi.as_view(), name="api-dashboards-worst"),
    path("api/dashboards/heatmap/", apis.HeatmapApi.as_view(), name="api-dashboards-heatmap"),
    path("api/dashboards/series/", apis.DrilldownApi.as_view(), name="api-dashboards-series"),
    path("api/dashboards/alerts/", apis.AlertListApi.as_view(), name="api-dashboards-alerts"),
    path("api/dashboards/refused/", apis.RefusedApi.as_view(), name="api-dashboards-refused"),
    path(
        "api/dashboards/alerts/<int:alert_id>/acknowledge/",
        apis.AlertAcknowledgeApi.as_view(),
        name="api-dashboards-alert-ack",
    ),
    path(
        "api/dashboards/access-alerts/",
        apis.AccessAlertListApi.as_view(),
        name="api-dashboards-access-alerts",
    ),
    path(
        "api/dashboards/access-alerts/<int:alert_id>/acknowledge/",
        apis.AccessAlertAcknowledgeApi.as_view(),
        name="api-dashboards-access-alert-ack",
    ),
    path(
        "api/dashboards/sites/<int:site_id>/alert-settings/",
        apis.AlertSettingsApi.as_view(),
        name="api-dashboards-alert-settings",
    ),
    path(
        "api/dashboards/report.pdf", apis.MonthlyReportApi.as_view(), name="api-dashboards-report"
    ),
]
