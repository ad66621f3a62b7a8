from django.urls import path

from backend.dicomweb import views

S = "studies/<str:study_uid>"
SE = f"{S}/series/<str:series_uid>"
I = f"{SE}/instances/<str:sop_uid>"  # noqa: E741

urlpatterns = [
    path("studies", views.StudiesRootView.as_view(), name="dicomweb-studies"),
    path(S, views.StowStudyView.as_view(), name="stow-study"),
    path(f"{S}/metadata", views.WadoStudyMetadataView.as_view(), name="wado-study-metadata"),
    path("series", views.QidoSeriesView.as_view(), name="qido-all-series"),
    path("instances", views.QidoInstancesView.as_view(), name="qido-all-instances"),
    path(f"{S}/series", views.QidoSeriesView.as_view(), name="qido-series"),
    path(f"{S}/instances", views.QidoInstancesView.as_view(), name="qido-study-instances"),
    path(f"{SE}/instances", views.QidoInstancesView.as_view(), name="qido-instances"),
    path(SE, views.WadoSeriesView.as_view(), name="wado-series"),
    path(f"{SE}/metadata", views.WadoSeriesMetadataView.as_view(), name="wado-series-metadata"),
    path(f"{SE}/thumbnail", views.WadoThumbnailView.as_view(), name="wado-series-thumbnail"),
    path(I, views.WadoInstanceView.as_view(), name="wado-instance"),
    path(f"{I}/metadata", views.WadoInstanceMetadataView.as_view(), name="wado-instance-metadata"),
    path(f"{I}/rendered", views.WadoRenderedView.as_view(), name="wado-instance-rendered"),
    path(f"{I}/thumbnail", views.WadoThumbnailView.as_view(), name="wado-instance-thumbnail"),
    path(f"{I}/frames/<str:frames>", views.WadoFramesView.as_view(), name="wado-frames"),
    path(
        f"{I}/frames/<str:frames>/rendered",
        views.WadoRenderedView.as_view(),
        name="wado-frame-rendered",
    ),
]
