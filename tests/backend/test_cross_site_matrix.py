"""The cross-site matrix for the routes whose objects are not reached from a study (security
checklist A-02): campaigns, assignments and their slices, findings and reviews, regions,
training sets and fine-tunings, alerts and the dashboards. Site A holds one of each; a user of
site B holding every role there asks for each of them, by every method the route has. An
object of site A answers 404, as one that does not exist; a list or an aggregate answers only
site B's (nothing here); nothing of site A is named in any answer, and nothing of site A
changes. ``test_site_isolation.py`` covers the routes reached from a study."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.utils import timezone

from backend.accounts.models import Membership, Role
from tests.annotation.conftest import one_reader_campaign
from tests.conftest import _persona
from tests.review.helpers import scored_series

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scratch_store")]


@dataclass
class World:
    """Site A's objects, by name, and the strings that would betray them in an answer."""

    ids: dict[str, Any]
    secrets: list[str]


@pytest.fixture
def world(site_a, api) -> World:
    from annotation.models import Assignment, FineTune, TrainingSet
    from backend.dashboards.models import AccessAlert, Alert
    from backend.review.models import FindingReview
    from backend.scoring.models import Finding

    lead = _persona("lead_a", site_a, "annotation_lead")
    reader = _persona("reader_a", site_a, "annotator")
    radiologist = _persona("radio_a", site_a, "radiologist")
    series = scored_series(site_a, slices=2)
    finding = Finding.objects.filter(run=series.current_run).order_by("pk").first()
    assert finding is not None
    review = FindingReview.objects.create(  # a correction, with a mask to serve
        finding=finding, site=site_a, user=radiologist.user, action="correct",
        mask_key=finding.mask_key, mask_area_px=finding.area_px,
    )  # fmt: skip
    campaign = one_reader_campaign(lead, site_a, reader, [series], blinded=False)
    assignment = Assignment.objects.get(campaign=campaign)
    instance = series.instances.order_by("instance_number").first()
    training_set = TrainingSet.objects.create(
        campaign=campaign, site=site_a, version=1, path="/nonexistent", sha256="0" * 64,
        created_by=lead.user,
    )  # fmt: skip
    finetune = FineTune.objects.create(
        training_set=training_set, site=site_a, requested_by=lead.user
    )
    now = timezone.now()
    alert = Alert.objects.create(
        site=site_a, metric="spike", week=now.date(), count=9, total=12, baseline_count=1,
        baseline_total=96, baseline_weeks=8, dispersion=1.0, p_value=1e-6, threshold=1e-3,
    )  # fmt: skip
    access = AccessAlert.objects.create(
        site=site_a, user_id=1, username="intruder", attempts=20, first_at=now, last_at=now
    )
    ids = {
        "site": site_a.pk, "series": series.pk, "finding": finding.pk, "review": review.pk,
        "campaign": campaign.pk, "assignment": assignment.pk, "instance": instance.pk,
        "training_set": training_set.pk, "finetune": finetune.pk, "alert": alert.pk,
        "access_alert": access.pk,
    }  # fmt: skip
    secrets = [
        site_a.name, site_a.slug, str(series.pk), str(campaign.pk), str(assignment.pk),
        str(instance.pk), str(training_set.pk), str(finetune.pk), series.study.study_uid,
        series.series_uid, campaign.name, "intruder",
    ]  # fmt: skip
    return World(ids=ids, secrets=secrets)


@pytest.fixture
def everything_b(site_b):
    """A user of site B with every role there (the most any user of site B can be)."""
    persona = _persona("all_b", site_b, "site_admin")
    for role in (Role.RADIOLOGIST, Role.OPERATOR, Role.ANNOTATOR, Role.ANNOTATION_LEAD):
        Membership.objects.create(user=persona.user, site=site_b, role=role)
    return persona


Url = Callable[[dict[str, Any]], str]
OBJECT = 404  # site A's object: as if it did not exist
LIST = 200  # a list or an aggregate: site B's only

Body = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] | None
# (route name, method, url, body, expected status)
MATRIX: list[tuple[str, str, Url, Body, int]] = [
    ("api-annotate-queue", "get", lambda i: "/api/annotate/queue/", None, LIST),
    ("api-assignment", "get", lambda i: f"/api/assignments/{i['assignment']}/", None, OBJECT),
    ("api-assignment-finish", "post", lambda i: f"/api/assignments/{i['assignment']}/finish/",
     None, OBJECT),
    ("api-assignment-skip", "post", lambda i: f"/api/assignments/{i['assignment']}/skip/",
     {"reason": "not mine"}, OBJECT),
    ("api-campaign", "get", lambda i: f"/api/campaigns/{i['campaign']}/", None, OBJECT),
    ("api-campaign-add-series", "post", lambda i: f"/api/campaigns/{i['campaign']}/series/",
     lambda i: {"series_ids": [str(i["series"])]}, OBJECT),
    ("api-campaign-adjudications", "post",
     lambda i: f"/api/campaigns/{i['campaign']}/adjudications/",
     lambda i: {"instance_id": str(i["instance"]), "masks": {}}, OBJECT),
    ("api-campaign-agreement", "get", lambda i: f"/api/campaigns/{i['campaign']}/agreement/",
     None, OBJECT),
    ("api-campaign-agreement-csv", "get",
     lambda i: f"/api/campaigns/{i['campaign']}/agreement.csv", None, OBJECT),
    ("api-campaign-agreement-png", "get",
     lambda i: f"/api/campaigns/{i['campaign']}/agreement.png", None, OBJECT),
    ("api-campaign-disagreements", "get",
     lambda i: f"/api/campaigns/{i['campaign']}/disagreements/", None, OBJECT),
    ("api-campaign-finetunes", "get", lambda i: f"/api/campaigns/{i['campaign']}/finetunes/",
     None, OBJECT),
    ("api-campaign-readings", "get",
     lambda i: f"/api/campaigns/{i['campaign']}/instances/{i['instance']}/readings/", None,
     OBJECT),
    ("api-campaign-rollback", "post", lambda i: f"/api/campaigns/{i['campaign']}/rollback/",
     {"reason": "not theirs"}, OBJECT),
    ("api-campaign-suggestions", "get",
     lambda i: f"/api/campaigns/{i['campaign']}/suggestions/", None, OBJECT),
    ("api-campaign-training-sets", "get",
     lambda i: f"/api/campaigns/{i['campaign']}/training-sets/", None, OBJECT),
    ("api-campaign-training-sets", "post",
     lambda i: f"/api/campaigns/{i['campaign']}/training-sets/", {}, OBJECT),
    ("api-campaigns", "get", lambda i: "/api/campaigns/", None, LIST),
    ("api-campaigns", "post", lambda i: "/api/campaigns/",
     lambda i: {"site_id": i["site"], "name": "theirs", "artifact_types": ["motion"],
                "readers_per_image": 1, "blinded": False}, OBJECT),
    ("api-dashboards-access-alert-ack", "post",
     lambda i: f"/api/dashboards/access-alerts/{i['access_alert']}/acknowledge/", None, OBJECT),
    ("api-dashboards-access-alerts", "get", lambda i: "/api/dashboards/access-alerts/", None,
     LIST),
    ("api-dashboards-alert-ack", "post",
     lambda i: f"/api/dashboards/alerts/{i['alert']}/acknowledge/", None, OBJECT),
    ("api-dashboards-alert-settings", "get",
     lambda i: f"/api/dashboards/sites/{i['site']}/alert-settings/", None, OBJECT),
    ("api-dashboards-alert-settings", "put",
     lambda i: f"/api/dashboards/sites/{i['site']}/alert-settings/",
     {"emails": "spy@example.org", "webhook_url": ""}, OBJECT),
    ("api-dashboards-alerts", "get", lambda i: "/api/dashboards/alerts/", None, LIST),
    ("api-dashboards-heatmap", "get", lambda i: "/api/dashboards/heatmap/", None, LIST),
    ("api-dashboards-refused", "get", lambda i: "/api/dashboards/refused/", None, LIST),
    ("api-dashboards-report", "get",
     lambda i: f"/api/dashboards/report.pdf?site={i['site']}&month=2026-11", None, OBJECT),
    ("api-dashboards-series", "get", lambda i: "/api/dashboards/series/", None, LIST),
    ("api-dashboards-summary", "get", lambda i: "/api/dashboards/summary/", None, LIST),
    ("api-dashboards-trend", "get", lambda i: "/api/dashboards/trend/", None, LIST),
    ("api-dashboards-worst", "get", lambda i: "/api/dashboards/worst/", None, LIST),
    ("api-finding-mask", "get", lambda i: f"/api/findings/{i['finding']}/mask.png", None,
     OBJECT),
    ("api-finding-review-mask", "get", lambda i: f"/api/finding-reviews/{i['review']}/mask.png",
     None, OBJECT),
    ("api-finding-reviews", "get", lambda i: f"/api/findings/{i['finding']}/reviews/", None,
     OBJECT),
    ("api-finding-reviews", "post", lambda i: f"/api/findings/{i['finding']}/reviews/",
     {"action": "reject"}, OBJECT),
    ("api-finetune", "get", lambda i: f"/api/finetunes/{i['finetune']}/", None, OBJECT),
    ("api-finetune-promote", "post", lambda i: f"/api/finetunes/{i['finetune']}/promote/",
     {"reason": "mine now"}, OBJECT),
    ("api-series-roi", "put", lambda i: f"/api/series/{i['series']}/roi/",
     {"polygon": [[0, 0], [10, 0], [10, 10]]}, OBJECT),
    ("api-series-roi", "delete", lambda i: f"/api/series/{i['series']}/roi/", None, OBJECT),
    ("api-slice-annotation", "get",
     lambda i: f"/api/assignments/{i['assignment']}/instances/{i['instance']}/annotation/",
     None, OBJECT),
    ("api-slice-annotation", "post",
     lambda i: f"/api/assignments/{i['assignment']}/instances/{i['instance']}/annotation/",
     {"masks": {}}, OBJECT),
    ("api-slice-assist", "post",
     lambda i: f"/api/assignments/{i['assignment']}/instances/{i['instance']}/assist/", None,
     OBJECT),
    ("api-slice-model-masks", "get",
     lambda i: f"/api/assignments/{i['assignment']}/instances/{i['instance']}/model-masks/",
     None, OBJECT),
    ("api-slice-others", "get",
     lambda i: f"/api/assignments/{i['assignment']}/instances/{i['instance']}/others/", None,
     OBJECT),
    ("api-training-set-finetune", "post",
     lambda i: f"/api/training-sets/{i['training_set']}/finetune/", {}, OBJECT),
]  # fmt: skip


def _state() -> dict[str, Any]:
    """What a request of site B's must not change at site A."""
    from annotation.models import (
        Adjudication,
        Annotation,
        Assignment,
        Campaign,
        FineTune,
        TrainingSet,
    )
    from backend.dashboards.models import AccessAlert, Alert, AlertSettings
    from backend.review.models import FindingReview
    from backend.scoring.models import ModelPromotion, SeriesRegionOfInterest

    return {
        "campaigns": list(Campaign.objects.values_list("pk", "site_id")),
        "assignments": list(Assignment.objects.values_list("pk", "status")),
        "annotations": Annotation.objects.count(),
        "adjudications": Adjudication.objects.count(),
        "training_sets": TrainingSet.objects.count(),
        "finetunes": list(FineTune.objects.values_list("pk", "status")),
        "promotions": ModelPromotion.objects.count(),
        "reviews": FindingReview.objects.count(),
        "acknowledged": list(Alert.objects.values_list("acknowledged_at", flat=True))
        + list(AccessAlert.objects.values_list("acknowledged_at", flat=True)),
        "alert_settings": list(AlertSettings.objects.values_list("site_id", "emails")),
        "regions": SeriesRegionOfInterest.objects.count(),
    }


def test_every_route_scoped_elsewhere_is_in_the_matrix():
    from tests.backend.test_site_isolation import SCOPED_ELSEWHERE

    assert {route for route, *_ in MATRIX} == set(SCOPED_ELSEWHERE)


def test_site_b_gets_nothing_of_site_as(api, world, everything_b):
    """Every row of the matrix against one world (each request's answer and site A's state
    checked on their own; every failure listed)."""
    client = api.as_(everything_b)
    failures = []
    for route, method, url, body, expected in MATRIX:
        if callable(body):
            body = body(world.ids)
        before = _state()
        response = getattr(client, method)(url(world.ids), body, format="json")
        text = response.content.decode(errors="replace")
        if response.status_code != expected:
            failures.append((route, method, response.status_code, text[:200]))
        leaked = [secret for secret in world.secrets if secret in text]
        if leaked:
            failures.append((route, method, "leaked", leaked))
        if _state() != before:
            failures.append((route, method, "changed site A"))
    assert not failures, failures
    assert len(MATRIX) == 46


def test_the_matrix_would_see_a_leak(api, world, site_a):
    """The same requests by site A's own lead and administrator do answer with site A's
    objects: the 404s above are the scope's doing, not broken requests."""
    persona = _persona("all_a", site_a, "site_admin")
    for role in (Role.RADIOLOGIST, Role.ANNOTATION_LEAD):
        Membership.objects.create(user=persona.user, site=site_a, role=role)
    client = api.as_(persona)
    for path in (
        f"/api/campaigns/{world.ids['campaign']}/",
        f"/api/finetunes/{world.ids['finetune']}/",
        f"/api/findings/{world.ids['finding']}/reviews/",
        f"/api/dashboards/sites/{world.ids['site']}/alert-settings/",
    ):
        assert client.get(path).status_code == 200, path
    assert client.get(f"/api/finding-reviews/{world.ids['review']}/mask.png").status_code == 200
    listed = client.get("/api/dashboards/access-alerts/").json()["rows"]
    assert [r["username"] for r in listed] == ["intruder"]
