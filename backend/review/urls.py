from django.urls import URLPattern, URLResolver, path

from backend.review import apis

urlpatterns: list[URLPattern | URLResolver] = [
    path(
        "api/findings/<int:finding_id>/reviews/",
        apis.FindingReviewApi.as_view(),
        name="api-finding-reviews",
    ),
    path(
        "api/finding-reviews/<int:review_id>/mask.png",
        apis.FindingReviewMaskApi.as_view(),
        name="api-finding-review-mask",
    ),
    path(
        "api/series/<uuid:series_id>/review/",
        apis.SeriesReviewApi.as_view(),
        name="api-series-review",
    ),
]
