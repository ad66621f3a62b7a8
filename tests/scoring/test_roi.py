"""Region of diagnostic interest: who may set it, how it is validated, and how it restricts the
index (hand-built findings and masks, so the expected figures are known)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from backend.audit.models import AuditEvent
from backend.scoring.masks import mask_key, mask_put
from backend.scoring.models import (
    Finding,
    InstanceScore,
    ModelVersion,
    RunStatus,
    ScoringRun,
    SeriesRegionOfInterest,
)
from backend.scoring.services import _series_summary
from tests.factories import InstanceFactory, SeriesFactory, StudyFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scratch_store")]

ROWS, COLS = 64, 80
TOP_LEFT = [[0, 0], [19, 0], [19, 19], [0, 19]]  # [col, row]
BOTTOM_RIGHT = [[50, 40], [79, 40], [79, 63], [50, 63]]


@pytest.fixture
def scored_series(site_a):
    """Three slices the model found non-diagnostic (0.2), each with motion in the top-left
    16x16 corner only; slice 3 also has noise in the bottom-right corner."""
    study = StudyFactory(site=site_a)
    series = SeriesFactory(study=study, status="scored")
    version = ModelVersion.objects.create(
        name="hand", version="1", sha256="0" * 64, weights_key="-", is_deployed=True
    )
    run = ScoringRun.objects.create(
        series=series, site=site_a, model_version=version, status=RunStatus.DONE
    )
    for number in (1, 2, 3):
        instance = InstanceFactory(series=series, instance_number=number, rows=ROWS, columns=COLS)
        InstanceScore.objects.create(
            run=run, instance=instance, suitability=0.2, nondiagnostic=True, reason="bad"
        )
        shapes = {"motion": (slice(0, 16), slice(0, 16))}
        if number == 3:
            shapes["noise"] = (slice(48, 64), slice(64, 80))
        for artifact, (rows, cols) in shapes.items():
            mask = np.zeros((ROWS, COLS), np.uint8)
            mask[rows, cols] = 1
            key = mask_key(
                site_id=site_a.pk, run_id=str(run.pk), sop_uid=instance.sop_uid, artifact=artifact
            )
            mask_put(key, mask)
            Finding.objects.create(
                run=run, instance=instance, site=site_a, artifact_type=artifact, mask_key=key,
                area_px=int(mask.sum()), area_fraction=float(mask.mean()), head_fraction=0.1,
                bbox=[rows.start, cols.start, rows.stop, cols.stop], confidence=0.9,
            )  # fmt: skip
    _series_summary(run, series)
    series.refresh_from_db()
    return series


def _put(api, persona, series, body):
    return api.as_(persona).put(f"/api/series/{series.pk}/roi/", body, format="json")


def test_an_artifact_outside_the_region_leaves_the_slice_diagnostic(
    api, radiologist_a, scored_series
):
    before = api.as_(radiologist_a).get(f"/api/series/{scored_series.pk}/result/").json()
    assert before["roi"] is None and before["roi_suitability_index"] is None
    assert all(i["roi_suitability_index"] is None for i in before["instances"])
    response = _put(api, radiologist_a, scored_series, {"polygon": BOTTOM_RIGHT})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body == api.as_(radiologist_a).get(f"/api/series/{scored_series.pk}/result/").json()
    by_number = {i["instance_number"]: i for i in body["instances"]}
    # Motion lies outside the region: diagnostic; the unrestricted index is kept beside it.
    assert by_number[1]["roi_suitability_index"] == 100
    assert by_number[1]["suitability_index"] == 20
    assert by_number[1]["roi_reason"] == "No artifact found in the region of interest: diagnostic."
    # Slice 3's noise lies inside it: the model's doubt stays.
    assert by_number[3]["roi_suitability_index"] == 20
    assert by_number[3]["roi_reason"].startswith("Noise over ")
    assert body["suitability_index"] == 10  # 0.5 * 0 + 0.5 * 0.2
    assert body["roi_suitability_index"] == round(100 * (0.5 * 2 / 3 + 0.5 * (1 + 1 + 0.2) / 3))
    assert body["roi"]["polygon"] == BOTTOM_RIGHT and body["roi"]["set_by"] == "rad_a"
    assert body["roi"]["first_instance"] is None and body["roi"]["set_at"]


def test_an_artifact_inside_the_region_leaves_the_slice_non_diagnostic(api, admin_a, scored_series):
    body = _put(api, admin_a, scored_series, {"polygon": TOP_LEFT}).json()
    assert {i["roi_suitability_index"] for i in body["instances"]} == {20}
    assert body["roi_reason"].startswith("Region of interest: 3 of 3 slices not diagnostic")


def test_the_instance_range_limits_the_region_to_its_slices(api, radiologist_a, scored_series):
    body = _put(
        api, radiologist_a, scored_series,
        {"polygon": BOTTOM_RIGHT, "first_instance": 2, "last_instance": 3},
    ).json()  # fmt: skip
    by_number = {i["instance_number"]: i["roi_suitability_index"] for i in body["instances"]}
    assert by_number == {1: None, 2: 100, 3: 20}
    assert body["roi"]["first_instance"] == 2 and body["roi"]["last_instance"] == 3


def test_replacing_and_clearing_keep_the_history(api, radiologist_a, scored_series):
    _put(api, radiologist_a, scored_series, {"polygon": TOP_LEFT})
    _put(api, radiologist_a, scored_series, {"polygon": BOTTOM_RIGHT})
    assert SeriesRegionOfInterest.objects.filter(series=scored_series).count() == 2
    current = SeriesRegionOfInterest.objects.get(series=scored_series, cleared_at__isnull=True)
    assert current.polygon == BOTTOM_RIGHT
    response = api.as_(radiologist_a).delete(f"/api/series/{scored_series.pk}/roi/")
    assert response.status_code == 200
    body = response.json()
    assert body["roi"] is None and body["roi_suitability_index"] is None
    assert all(i["roi_suitability_index"] is None for i in body["instances"])
    assert not SeriesRegionOfInterest.objects.filter(cleared_at__isnull=True).exists()
    actions = list(
        AuditEvent.objects.filter(object_id=str(scored_series.pk)).values_list("action", flat=True)
    )
    assert actions.count("annotate") == 2 and actions.count("delete") == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"polygon": [[0, 0], [10, 0]]}, "at least 3"),
        ({"polygon": [[0, 0], [10, 0], [10, 200]]}, "outside"),
        ({"polygon": [[-3, 0], [10, 0], [10, 10]]}, "outside"),
        ({"polygon": [[0, 0], [5, 5], [10, 10]]}, "no area"),
        ({"polygon": TOP_LEFT, "first_instance": 3, "last_instance": 1}, "after"),
        ({"polygon": TOP_LEFT, "first_instance": 7}, "no slice"),
        ({"polygon": [[0, "a"], [1, 1], [2, 0]]}, "valid number"),
    ],
)
def test_a_region_that_does_not_fit_the_series_is_refused(
    api, radiologist_a, scored_series, body, message
):
    response = _put(api, radiologist_a, scored_series, body)
    assert response.status_code == 400
    assert message in json.dumps(response.json())
    assert not SeriesRegionOfInterest.objects.exists()


def test_only_radiologists_and_admins_of_the_site_set_a_region(
    api, annotator_a, radiologist_b, admin_b, scored_series
):
    assert _put(api, annotator_a, scored_series, {"polygon": TOP_LEFT}).status_code == 403
    assert _put(api, radiologist_b, scored_series, {"polygon": TOP_LEFT}).status_code == 404
    assert api.as_(admin_b).delete(f"/api/series/{scored_series.pk}/roi/").status_code == 404
    assert _put(api, None, scored_series, {"polygon": TOP_LEFT}).status_code in (401, 403)
    assert not SeriesRegionOfInterest.objects.exists()
    denied = AuditEvent.objects.filter(object_id=str(scored_series.pk), outcome="denied")
    # Both other-site 404s and the annotator's own-site 403, each against the series' site.
    assert sorted(denied.values_list("username", flat=True)) == ["admin_b", "annotator_a", "rad_b"]
    assert set(denied.values_list("site_id", flat=True)) == {scored_series.site_id}


@pytest.mark.servers
@pytest.mark.django_db(transaction=True)
def test_a_region_change_is_published_to_the_series_site_only(
    asgi_server, api, radiologist_a, radiologist_b, scored_series
):
    from websockets.asyncio.client import connect

    async def scenario():
        sockets = []
        for persona in (radiologist_a, radiologist_b):
            ws = await connect(
                f"ws://{asgi_server}/ws/events/",
                additional_headers={"Origin": f"http://{asgi_server}"},
            )
            await ws.send(json.dumps({"type": "auth", "token": persona.token}))
            await asyncio.wait_for(ws.recv(), 10)
            sockets.append(ws)
        await asyncio.to_thread(_put, api, radiologist_a, scored_series, {"polygon": TOP_LEFT})
        event = json.loads(await asyncio.wait_for(sockets[0].recv(), 10))
        assert event["kind"] == "series.roi"
        assert event["data"]["series_id"] == str(scored_series.pk)
        assert event["data"]["roi"]["polygon"] == TOP_LEFT
        assert event["data"]["roi_suitability_index"] == 10
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sockets[1].recv(), 1.5)
        await asyncio.to_thread(
            api.as_(radiologist_a).delete, f"/api/series/{scored_series.pk}/roi/"
        )
        event = json.loads(await asyncio.wait_for(sockets[0].recv(), 10))
        assert event["kind"] == "series.roi" and event["data"]["roi"] is None
        for ws in sockets:
            await ws.close()

    asyncio.run(scenario())
