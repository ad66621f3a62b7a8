"""Reviewing findings and series over the REST API: stored as history, audited, site-scoped,
the model's mask kept beside each corrected version, and announced to the site's users."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from PIL import Image

from backend.audit.models import AuditEvent
from backend.realtime.services import site_group
from backend.review.models import FindingReview, SeriesReview
from backend.scoring.masks import mask_get
from backend.scoring.models import Finding
from tests.review.helpers import BOXES, box_mask, scored_series

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scratch_store")]


@pytest.fixture
def series_a(site_a):
    return scored_series(site_a, slices=2)


def _finding(series, artifact="motion") -> Finding:
    return Finding.objects.filter(run=series.current_run, artifact_type=artifact).first()


def _png(mask: np.ndarray) -> str:
    out = io.BytesIO()
    Image.fromarray(mask * 255).convert("1").save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_a_radiologist_accepts_a_finding_and_the_history_shows_it(api, radiologist_a, series_a):
    finding = _finding(series_a)
    response = api.as_(radiologist_a).post(
        f"/api/findings/{finding.pk}/reviews/", {"action": "accept", "comment": "clear ghosts"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    finding.refresh_from_db()
    assert finding.review_state == "accepted"
    history = api.as_(radiologist_a).get(f"/api/findings/{finding.pk}/reviews/").json()
    assert [(h["action"], h["user"], h["comment"]) for h in history] == [
        ("accept", "rad_a", "clear ghosts")
    ]
    assert AuditEvent.objects.filter(
        username="rad_a", action="annotate", object_type="series", object_id=str(series_a.pk)
    ).exists()


def test_another_radiologist_of_the_site_sees_the_review(api, radiologist_a, admin_a, series_a):
    finding = _finding(series_a)
    api.as_(radiologist_a).post(
        f"/api/findings/{finding.pk}/reviews/", {"action": "reject"}, format="json"
    )
    summary = api.as_(admin_a).get(f"/api/series/{series_a.pk}/review/").json()
    assert summary["findings"][str(finding.pk)][0]["action"] == "reject"
    assert summary["findings"][str(finding.pk)][0]["user"] == "rad_a"
    result = api.as_(admin_a).get(f"/api/series/{series_a.pk}/result/").json()
    states = {f["id"]: f["review_state"] for i in result["instances"] for f in i["findings"]}
    assert states[finding.pk] == "rejected"


def test_a_correction_stores_a_new_mask_version_and_keeps_the_models(api, radiologist_a, series_a):
    finding = _finding(series_a)
    original = mask_get(finding.mask_key)
    corrected = box_mask(64, 64, (0, 10, 0, 10))
    response = api.as_(radiologist_a).post(
        f"/api/findings/{finding.pk}/reviews/",
        {"action": "correct", "mask_png": _png(corrected)}, format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["mask_area_px"] == int(corrected.sum())
    finding.refresh_from_db()
    assert finding.review_state == "corrected"
    assert np.array_equal(mask_get(finding.mask_key), original)  # the model's mask is kept
    served = api.as_(radiologist_a).get(body["mask_url"])
    assert served.status_code == 200 and served["Content-Type"] == "image/png"
    got = (np.asarray(Image.open(io.BytesIO(served.content)).convert("L")) > 0).astype(np.uint8)
    assert np.array_equal(got, corrected)

    second = box_mask(64, 64, (20, 30, 20, 30))
    again = api.as_(radiologist_a).post(
        f"/api/findings/{finding.pk}/reviews/",
        {"action": "correct", "mask_png": _png(second)}, format="json",
    ).json()  # fmt: skip
    keys = list(FindingReview.objects.filter(finding=finding).values_list("mask_key", flat=True))
    assert len(set(keys)) == 2 and all(k.endswith((".v2.png", ".v3.png")) for k in keys)
    assert again["mask_url"] != body["mask_url"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"action": "correct"}, "needs the corrected mask"),
        ({"action": "correct", "mask_png": base64.b64encode(b"GIF89a").decode()}, "not a readable"),
        ({"action": "correct", "mask_png": "%%%"}, "not base64"),
        ({"action": "accept", "mask_png": None}, None),
    ],
)
def test_a_bad_correction_is_refused_and_changes_nothing(
    api, radiologist_a, series_a, payload, message
):
    finding = _finding(series_a)
    payload = {k: v for k, v in payload.items() if v is not None}
    response = api.as_(radiologist_a).post(
        f"/api/findings/{finding.pk}/reviews/", payload, format="json"
    )
    if message is None:
        assert response.status_code == 201
        return
    assert response.status_code == 400
    assert message in response.content.decode()
    finding.refresh_from_db()
    assert finding.review_state == "pending"
    assert not FindingReview.objects.exists()


def test_a_mask_on_another_grid_is_refused(api, radiologist_a, series_a):
    finding = _finding(series_a)
    response = api.as_(radiologist_a).post(
        f"/api/findings/{finding.pk}/reviews/",
        {"action": "correct", "mask_png": _png(np.ones((32, 64), np.uint8))}, format="json",
    )  # fmt: skip
    assert response.status_code == 400
    assert "64×32, the image 64×64" in response.content.decode()


def test_another_sites_finding_and_series_are_404_and_audited_as_denied(
    api, radiologist_b, series_a
):
    finding = _finding(series_a)
    client = api.as_(radiologist_b)
    assert (
        client.post(
            f"/api/findings/{finding.pk}/reviews/", {"action": "accept"}, format="json"
        ).status_code
        == 404
    )
    assert client.get(f"/api/findings/{finding.pk}/reviews/").status_code == 404
    assert client.get(f"/api/series/{series_a.pk}/review/").status_code == 404
    assert (
        client.post(
            f"/api/series/{series_a.pk}/review/", {"verdict": "diagnostic"}, format="json"
        ).status_code
        == 404
    )
    assert not FindingReview.objects.exists() and not SeriesReview.objects.exists()
    assert AuditEvent.objects.filter(username="rad_b", outcome="denied").count() == 4


def test_another_sites_corrected_mask_is_404(api, radiologist_a, radiologist_b, series_a):
    finding = _finding(series_a)
    body = api.as_(radiologist_a).post(
        f"/api/findings/{finding.pk}/reviews/",
        {"action": "correct", "mask_png": _png(box_mask(64, 64, BOXES["motion"]))}, format="json",
    ).json()  # fmt: skip
    assert api.as_(radiologist_b).get(body["mask_url"]).status_code == 404


def test_an_annotator_sees_the_series_but_may_not_review(api, annotator_a, series_a):
    finding = _finding(series_a)
    response = api.as_(annotator_a).post(
        f"/api/findings/{finding.pk}/reviews/", {"action": "accept"}, format="json"
    )
    assert response.status_code == 403
    response = api.as_(annotator_a).post(
        f"/api/series/{series_a.pk}/review/", {"verdict": "diagnostic"}, format="json"
    )
    assert response.status_code == 403
    assert "radiologists and administrators" in response.json()["detail"]
    assert api.as_(annotator_a).get(f"/api/series/{series_a.pk}/review/").status_code == 200
    # Both refusals are denied attempts on the audit trail, against the series' site.
    denied = AuditEvent.objects.filter(outcome="denied", username="annotator_a")
    assert (
        list(denied.values_list("site_id", "object_type", "object_id", "action"))
        == [(series_a.site_id, "series", str(series_a.pk), "annotate")] * 2
    )
    assert not FindingReview.objects.exists() and not SeriesReview.objects.exists()


def test_a_series_verdict_with_a_comment_is_kept_as_history(api, radiologist_a, admin_a, series_a):
    url = f"/api/series/{series_a.pk}/review/"
    first = api.as_(radiologist_a).post(
        url, {"verdict": "nondiagnostic", "comment": "repeat the FLAIR"}, format="json"
    )
    assert first.status_code == 201
    api.as_(admin_a).post(url, {"verdict": "diagnostic"}, format="json")
    summary = api.as_(radiologist_a).get(url).json()
    assert summary["verdict"] == "diagnostic"
    assert [(v["verdict"], v["user"], v["comment"]) for v in summary["verdicts"]] == [
        ("diagnostic", "admin_a", ""),
        ("nondiagnostic", "rad_a", "repeat the FLAIR"),
    ]
    bad = api.as_(radiologist_a).post(url, {"verdict": "maybe"}, format="json")
    assert bad.status_code == 400


def test_a_review_is_announced_to_the_sites_users_only(
    api, radiologist_a, series_a, site_a, site_b, django_capture_on_commit_callbacks
):
    layer = get_channel_layer()
    mine = async_to_sync(layer.new_channel)()
    theirs = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(site_group(site_a.pk), mine)
    async_to_sync(layer.group_add)(site_group(site_b.pk), theirs)
    finding = _finding(series_a)
    with django_capture_on_commit_callbacks(execute=True):
        api.as_(radiologist_a).post(
            f"/api/findings/{finding.pk}/reviews/", {"action": "accept"}, format="json"
        )
    message = async_to_sync(layer.receive)(mine)
    assert message["event"] == {
        "kind": "review.changed",
        "site_id": site_a.pk,
        "data": {
            "series_id": str(series_a.pk),
            "finding_id": finding.pk,
            "action": "accept",
            "review_state": "accepted",
            "by": "rad_a",
        },
    }

    async def nothing_for_b() -> bool:
        import asyncio

        try:
            await asyncio.wait_for(layer.receive(theirs), 1.0)
        except TimeoutError:
            return True
        return False

    assert async_to_sync(nothing_for_b)()


def test_mask_versions_stay_in_the_browsers_own_cache_and_the_rest_is_never_stored(
    api, radiologist_a, radiologist_b, series_a
):
    finding = _finding(series_a)
    body = api.as_(radiologist_a).post(
        f"/api/findings/{finding.pk}/reviews/",
        {"action": "correct", "mask_png": _png(box_mask(64, 64, (0, 10, 0, 10)))}, format="json",
    ).json()  # fmt: skip
    for url in (body["mask_url"], f"/api/findings/{finding.pk}/mask.png"):
        served = api.as_(radiologist_a).get(url)
        assert served.status_code == 200
        assert served["Cache-Control"].startswith("private, max-age=")
        assert "Cookie" in served["Vary"] and "Authorization" in served["Vary"]
        refused = api.as_(radiologist_b).get(url)  # another site: 404, never stored
        assert refused.status_code == 404 and refused["Cache-Control"] == "no-store"
    result = api.as_(radiologist_a).get(f"/api/series/{series_a.pk}/result/")
    assert result["Cache-Control"] == "no-store"  # results change as reviews arrive
