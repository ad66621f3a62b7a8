"""Tenant isolation, endpoint by endpoint: another site's user gets 404 on a site's objects and
sees none of them in lists or counts; anonymous callers get 401."""

from __future__ import annotations

import pytest
from django.urls import URLResolver, get_resolver

from backend.studies.models import Instance, Series

pytestmark = pytest.mark.django_db

# Every API route and how to reach it. test_every_api_route_is_in_the_matrix keeps this honest.
DETAIL_ROUTES = {
    "api-study": lambda study: f"/api/studies/{study.pk}/",
    "api-series": lambda study: f"/api/series/{study.series.first().pk}/",
    "api-series-instances": lambda study: f"/api/series/{study.series.first().pk}/instances/",
    "api-series-result": lambda study: f"/api/series/{study.series.first().pk}/result/",
    "api-series-review": lambda study: f"/api/series/{study.series.first().pk}/review/",
}
LIST_ROUTES = {
    "api-study-list": "/api/studies/",
    "api-series-list": "/api/series/",
}
NON_CLINICAL_ROUTES = {
    "api-token-create",  # anonymous by design
    "api-token-revoke",
    "api-me",
    "api-sites",
    "api-audit-events",  # covered in test_audit.py
    # Uploads are private to their sender: tests/ingest/test_uploads.py
    "api-upload-create",
    "api-upload",
    "api-upload-chunk",
    "api-upload-complete",
    "api-schema",
    "api-docs",
}
# Routes whose objects are not reachable from a study (findings, campaigns, assignments,
# aggregates): test_cross_site_matrix.py asks for each of them, by every method, as a user of
# another site holding every role there (a 404, or nothing listed; nothing changed).
SCOPED_ELSEWHERE = {
    "api-finding-mask", "api-series-roi", "api-finding-reviews", "api-finding-review-mask",
    "api-dashboards-summary", "api-dashboards-trend", "api-dashboards-worst",
    "api-dashboards-heatmap", "api-dashboards-series", "api-dashboards-alerts",
    "api-dashboards-alert-ack", "api-dashboards-alert-settings", "api-dashboards-report",
    "api-dashboards-refused", "api-dashboards-access-alerts", "api-dashboards-access-alert-ack",
    "api-campaigns", "api-campaign", "api-campaign-disagreements", "api-campaign-agreement",
    "api-campaign-agreement-csv", "api-campaign-agreement-png", "api-campaign-suggestions",
    "api-campaign-add-series", "api-campaign-readings", "api-campaign-adjudications",
    "api-campaign-training-sets", "api-campaign-finetunes", "api-campaign-rollback",
    "api-training-set-finetune", "api-finetune", "api-finetune-promote", "api-annotate-queue",
    "api-assignment", "api-assignment-skip", "api-assignment-finish", "api-slice-annotation",
    "api-slice-model-masks", "api-slice-others", "api-slice-assist",
}  # fmt: skip


def _every_route(patterns=None, prefix=""):
    """(name, path, view) of every route, included URLconfs too (a new app cannot slip past)."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from _every_route(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield pattern.name, prefix + str(pattern.pattern), pattern.callback


def _api_routes():
    """Every named route under api/."""
    for name, path, _ in _every_route():
        if name and path.startswith("api/"):
            yield name, path


def test_every_api_route_is_in_the_matrix():
    names = {name for name, _ in _api_routes()}
    listed = set(DETAIL_ROUTES) | set(LIST_ROUTES) | NON_CLINICAL_ROUTES | set(SCOPED_ELSEWHERE)
    assert names == listed


ANONYMOUS_BY_DESIGN = {"api-token-create"}  # a password or a token is how one signs in


def test_no_rest_framework_view_is_open_to_anonymous_users_but_the_allow_list():
    """Security checklist A-01: every DRF view anywhere in the URL conf (the API, DICOMweb,
    the schema and its docs page, views added later) names a permission that is not AllowAny,
    except the sign-in endpoint; a new open view fails here until someone decides."""
    from rest_framework.permissions import AllowAny
    from rest_framework.views import APIView

    seen, open_views = 0, set()
    for name, path, callback in _every_route():
        view = getattr(callback, "cls", None)
        if view is None or not issubclass(view, APIView):
            continue
        seen += 1
        if any(isinstance(p, AllowAny) for p in view().get_permissions()):
            open_views.add(name or path)
    assert seen > 50
    assert open_views == ANONYMOUS_BY_DESIGN


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_the_api_schema_and_its_docs_page_need_a_signed_in_user(client, path):
    assert client.get(path).status_code in (401, 403)


@pytest.mark.parametrize("route", sorted(DETAIL_ROUTES))
def test_a_user_of_the_site_can_open_its_objects(api, radiologist_a, study_a, route):
    assert api.as_(radiologist_a).get(DETAIL_ROUTES[route](study_a)).status_code == 200


@pytest.mark.parametrize("route", sorted(DETAIL_ROUTES))
def test_another_sites_user_gets_404_on_a_sites_objects(api, radiologist_b, study_a, route):
    response = api.as_(radiologist_b).get(DETAIL_ROUTES[route](study_a))
    assert response.status_code == 404
    assert str(study_a.study_uid) not in response.content.decode()


@pytest.mark.parametrize("route", sorted(DETAIL_ROUTES))
def test_the_404_for_another_site_is_the_404_for_nothing(api, radiologist_b, study_a, route):
    import uuid

    theirs = api.as_(radiologist_b).get(DETAIL_ROUTES[route](study_a))
    url = DETAIL_ROUTES[route](study_a)
    for obj_id in (str(study_a.pk), str(study_a.series.first().pk)):
        url = url.replace(obj_id, str(uuid.uuid4()))
    nothing = api.as_(radiologist_b).get(url)
    assert (theirs.status_code, theirs.json()) == (nothing.status_code, nothing.json())


@pytest.mark.parametrize("route", sorted(LIST_ROUTES))
def test_another_sites_user_sees_nothing_in_lists_or_counts(api, radiologist_b, study_a, route):
    body = api.as_(radiologist_b).get(LIST_ROUTES[route]).json()
    assert body["count"] == 0
    assert body["results"] == []


@pytest.mark.parametrize("route", sorted(LIST_ROUTES))
def test_filtering_on_another_sites_id_still_returns_nothing(
    api, radiologist_b, study_a, site_a, route
):
    body = api.as_(radiologist_b).get(LIST_ROUTES[route], {"site": site_a.pk}).json()
    assert body["count"] == 0


@pytest.mark.parametrize("route", sorted(LIST_ROUTES))
def test_a_user_of_the_site_sees_its_objects_in_lists(api, radiologist_a, study_a, route):
    body = api.as_(radiologist_a).get(LIST_ROUTES[route]).json()
    assert body["count"] == 1


def test_a_superuser_sees_every_site(api, superuser, study_a, site_b):
    from tests.factories import StudyFactory

    StudyFactory(site=site_b)
    assert api.as_(superuser).get("/api/studies/").json()["count"] == 2


def test_a_user_of_two_sites_sees_both(api, radiologist_a, study_a, site_b):
    from backend.accounts.models import Membership
    from tests.factories import StudyFactory

    StudyFactory(site=site_b)
    Membership.objects.create(user=radiologist_a.user, site=site_b, role="radiologist")
    assert api.as_(radiologist_a).get("/api/studies/").json()["count"] == 2


@pytest.mark.parametrize(
    "url",
    [*LIST_ROUTES.values(), "/api/me/", "/api/sites/", "/api/audit-events/"],
)
def test_anonymous_callers_get_401(api, study_a, url):
    response = api.as_(None).get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("route", sorted(DETAIL_ROUTES))
def test_anonymous_callers_get_401_on_objects(api, study_a, route):
    assert api.as_(None).get(DETAIL_ROUTES[route](study_a)).status_code == 401


def test_sites_lists_only_the_callers_sites(api, radiologist_b, site_a, site_b):
    body = api.as_(radiologist_b).get("/api/sites/").json()
    assert [s["id"] for s in body] == [site_b.pk]


def test_instances_of_one_site_are_never_listed_under_another(api, radiologist_a, study_a):
    series = Series.objects.get(study=study_a)
    body = api.as_(radiologist_a).get(f"/api/series/{series.pk}/instances/").json()
    assert len(body) == Instance.objects.filter(series=series).count() == 3
    assert body[0]["phase_encode_direction"] == "ROW"


def test_clinical_responses_are_not_cached(api, radiologist_a, study_a):
    response = api.as_(radiologist_a).get("/api/studies/")
    assert response["Cache-Control"] == "no-store"


def test_the_worklist_page_redirects_anonymous_users_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_a_series_without_a_scoring_run_says_so(api, radiologist_a, study_a):
    series = Series.objects.get(study=study_a)
    body = api.as_(radiologist_a).get(f"/api/series/{series.pk}/result/").json()
    assert body == {
        "series_id": str(series.pk),
        "status": "receiving",
        "model": None,
        "suitability_index": None,
        "reason": "",
        "instances": [],
        "roi": None,
        "roi_suitability_index": None,
        "roi_reason": "",
        "quarantined": [],
        "runs": [],
    }
