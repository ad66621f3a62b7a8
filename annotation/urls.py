from django.urls import URLPattern, URLResolver, path

from annotation import apis, views

urlpatterns: list[URLPattern | URLResolver] = [
    # pages
    path("campaigns/", views.campaign_list_page, name="campaigns"),
    path("campaigns/<uuid:campaign_id>/", views.campaign_page, name="campaign"),
    path(
        "campaigns/<uuid:campaign_id>/adjudicate/<uuid:instance_id>/",
        views.adjudicate_page,
        name="adjudicate",
    ),
    path("annotate/", views.queue_page, name="annotate-queue"),
    path("annotate/<uuid:assignment_id>/", views.annotate_page, name="annotate"),
    # API
    path("api/campaigns/", apis.CampaignListApi.as_view(), name="api-campaigns"),
    path(
        "api/campaigns/<uuid:campaign_id>/", apis.CampaignDetailApi.as_view(), name="api-campaign"
    ),
    path(
        "api/campaigns/<uuid:campaign_id>/disagreements/",
        apis.CampaignDisagreementsApi.as_view(),
        name="api-campaign-disagreements",
    ),
    path(
        "api/campaigns/<uuid:campaign_id>/agreement/",
        apis.CampaignAgreementApi.as_view(),
        name="api-campaign-agreement",
    ),
    path(
        "api/campaigns/<uuid:campaign_id>/agreement.csv",
        apis.CampaignAgreementApi.as_view(),
        {"fmt": "csv"},
        name="api-campaign-agreement-csv",
    ),
    path(
        "api/campaigns/<uuid:campaign_id>/agreement.png",
        apis.CampaignAgreementApi.as_view(),
        {"fmt": "png"},
        name="api-campaign-agreement-png",
    ),
    path(
        "api/campaigns/<uuid:campaign_id>/suggestions/",
        apis.CampaignSuggestionsApi.as_view(),
        name="api-campaign-suggestions",
    ),
    path(
        "api/campaigns/<uuid:campaign_id>/series/",
        apis.CampaignAddSeriesApi.as_view(),
        name="api-campaign-add-series",
    ),
    path(
        "api/campaigns/<uuid:campaign_id>/instances/<uuid:instance_id>/readings/",
        apis.SliceReadingsApi.as_view(),
        name="api-campaign-readings",
    ),
    path(
        "api/campaigns/<uuid:campaign_id>/adjudications/",
        apis.AdjudicationCreateApi.as_view(),
        name="api-campaign-adjudications",
    ),
    path(
        "api/campaigns/<uuid:campaign_id>/training-sets/",
        apis.TrainingSetListApi.as_view(),
        name="api-campaign-training-sets",
    ),
    path(
        "api/campaigns/<uuid:campaign_id>/finetunes/",
        apis.FineTuneListApi.as_view(),
        name="api-campaign-finetunes",
    ),
    path(
        "api/campaigns/<uuid:campaign_id>/rollback/",
        apis.ModelRollbackApi.as_view(),
        name="api-campaign-rollback",
    ),
    path(
        "api/training-sets/<uuid:training_set_id>/finetune/",
        apis.FineTuneCreateApi.as_view(),
        name="api-training-set-finetune",
    ),
    path(
        "api/finetunes/<uuid:finetune_id>/", apis.FineTuneDetailApi.as_view(), name="api-finetune"
    ),
    path(
        "api/finetunes/<uuid:finetune_id>/promote/",
        apis.FineTunePromoteApi.as_view(),
        name="api-finetune-promote",
    ),
    path("api/annotate/queue/", apis.QueueApi.as_view(), name="api-annotate-queue"),
    path(
        "api/assignments/<uuid:assignment_id>/",
        apis.AssignmentDetailApi.as_view(),
        name="api-assignment",
    ),
    path(
        "api/assignments/<uuid:assignment_id>/skip/",
        apis.AssignmentSkipApi.as_view(),
        name="api-assignment-skip",
    ),
    path(
        "api/assignments/<uuid:assignment_id>/finish/",
        apis.AssignmentFinishApi.as_view(),
        name="api-assignment-finish",
    ),
    path(
        "api/assignments/<uuid:assignment_id>/instances/<uuid:instance_id>/annotation/",
        apis.SliceAnnotationApi.as_view(),
        name="api-slice-annotation",
    ),
    path(
        "api/assignments/<uuid:assignment_id>/instances/<uuid:instance_id>/model-masks/",
        apis.SliceModelMasksApi.as_view(),
        name="api-slice-model-masks",
    ),
    path(
        "api/assignments/<uuid:assignment_id>/instances/<uuid:instance_id>/others/",
        apis.SliceOtherReadingsApi.as_view(),
        name="api-slice-others",
    ),
    path(
        "api/assignments/<uuid:assignment_id>/instances/<uuid:instance_id>/assist/",
        apis.SliceAssistApi.as_view(),
        name="api-slice-assist",
    ),
]
