from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from backend.accounts import apis as accounts_apis
from backend.audit import apis as audit_apis
from backend.ingest import apis as ingest_apis
from backend.scoring import apis as scoring_apis
from backend.studies import apis as studies_apis
from backend.web import views as web_views

api = [
    path("api/auth/token/", accounts_apis.TokenCreateApi.as_view(), name="api-token-create"),
    path(
        "api/auth/token/current/", accounts_apis.TokenRevokeApi.as_view(), name="api-token-revoke"
    ),
    path("api/me/", accounts_apis.MeApi.as_view(), name="api-me"),
    path("api/sites/", accounts_apis.SiteListApi.as_view(), name="api-sites"),
    path("api/studies/", studies_apis.StudyListApi.as_view(), name="api-study-list"),
    path("api/studies/<uuid:study_id>/", studies_apis.StudyDetailApi.as_view(), name="api-study"),
    path("api/series/", studies_apis.SeriesListApi.as_view(), name="api-series-list"),
    path("api/series/<uuid:series_id>/", studies_apis.SeriesDetailApi.as_view(), name="api-series"),
    path(
        "api/series/<uuid:series_id>/instances/",
        studies_apis.SeriesInstancesApi.as_view(),
        name="api-series-instances",
    ),
    path("api/uploads/", ingest_apis.UploadCreateApi.as_view(), name="api-upload-create"),
    path("api/uploads/<uuid:upload_id>/", ingest_apis.UploadDetailApi.as_view(), name="api-upload"),
    path(
        "api/uploads/<uuid:upload_id>/chunk/",
        ingest_apis.UploadChunkApi.as_view(),
        name="api-upload-chunk",
    ),
    path(
        "api/uploads/<uuid:upload_id>/complete/",
        ingest_apis.UploadCompleteApi.as_view(),
        name="api-upload-complete",
    ),
    path(
        "api/series/<uuid:series_id>/result/",
        scoring_apis.SeriesResultApi.as_view(),
        name="api-series-result",
    ),
    path(
        "api/findings/<int:finding_id>/mask.png",
        scoring_apis.FindingMaskApi.as_view(),
        name="api-finding-mask",
    ),
    path(
        "api/series/<uuid:series_id>/roi/",
        scoring_apis.SeriesRoiApi.as_view(),
        name="api-series-roi",
    ),
    path("api/audit-events/", audit_apis.AuditEventListApi.as_view(), name="api-audit-events"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

urlpatterns = [
    path("", web_views.home, name="home"),
    path("health/", web_views.health, name="health"),
    path("upload/", web_views.upload, name="upload"),
    path("series/<uuid:series_id>/", web_views.series_viewer, name="series-viewer"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("dicomweb/", include("backend.dicomweb.urls")),
    path("", include("backend.dicomweb.ohif_urls")),  # opt-in OHIF check (docs/ohif.md)
    # Each of these apps owns its pages and its /api/... routes.
    path("", include("backend.review.urls")),
    path("", include("backend.dashboards.urls")),
    path("", include("annotation.urls")),
    *api,
]
