"""The worklist API: filters, search, sorting, paging, the review state, site scoping."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from backend.review.models import SeriesReview
from backend.scoring.models import Finding, ModelVersion, ScoringRun
from backend.studies.models import Scanner, Series
from tests.factories import InstanceFactory, SeriesFactory, StudyFactory

pytestmark = pytest.mark.django_db


def _series(site, description, *, suitability=None, nondiagnostic=None, findings=(), days_ago=0):
    series = SeriesFactory(study=StudyFactory(site=site), description=description)
    Series.objects.filter(pk=series.pk).update(
        received_at=timezone.now() - datetime.timedelta(days=days_ago)
    )
    if suitability is not None:
        model, _ = ModelVersion.objects.get_or_create(
            sha256="e" * 64, defaults={"name": "m", "version": "1", "weights_key": "-"}
        )
        run = ScoringRun.objects.create(
            series=series, site=site, model_version=model, status="done",
            suitability=suitability, nondiagnostic=nondiagnostic,
        )  # fmt: skip
        for artifact, area in findings:
            instance = InstanceFactory(series=series)  # a finding per type and instance
            Finding.objects.create(
                run=run, instance=instance, site=site, artifact_type=artifact, area_px=area,
                area_fraction=0.1, confidence=0.9,
            )  # fmt: skip
        Series.objects.filter(pk=series.pk).update(
            current_run=run, suitability=suitability, status="scored"
        )
    return series


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


@pytest.fixture
def worklist(site_a, site_b):
    return {
        "bad": _series(
            site_a,
            "T2 FLAIR AX",
            suitability=0.31,
            nondiagnostic=True,
            findings=[("motion", 500), ("ghosting", 800), ("motion", 400)],
            days_ago=1,
        ),
        "good": _series(
            site_a,
            "T1 MPRAGE",
            suitability=0.93,
            nondiagnostic=False,
            days_ago=3,
            findings=[("noise", 50)],
        ),
        "new": _series(site_a, "DWI", days_ago=0),
        "other": _series(site_b, "T2 FLAIR AX", suitability=0.1, nondiagnostic=True),
    }


def test_the_worklist_lists_the_sites_series_newest_first_with_badge_data(
    api, radiologist_a, worklist
):
    response = api.as_(radiologist_a).get("/api/series/")
    assert _ids(response) == [str(worklist[k].pk) for k in ("new", "bad", "good")]
    bad = response.json()["results"][1]
    # By total area: motion 500 + 400 px beats ghosting 800 px.
    assert bad["dominant_artifact"] == "motion"
    assert bad["suitability_index"] == 31 and bad["nondiagnostic"] is True
    assert bad["site_name"] == "Site A" and bad["verdict"] is None
    assert response.json()["results"][0]["suitability_index"] is None


def test_a_rejected_finding_is_no_longer_the_series_dominant_artifact(api, radiologist_a, worklist):
    """The model's motion (500 + 400 px) led ghosting (800 px); a radiologist rejects both
    motion findings through the review API: ghosting leads, as if motion were not there."""
    client = api.as_(radiologist_a)
    motion = Finding.objects.filter(run__series=worklist["bad"], artifact_type="motion")
    for finding in motion.order_by("area_px"):
        answer = client.post(f"/api/findings/{finding.pk}/reviews/", {"action": "reject"})
        assert answer.status_code == 201, answer.content
    rows = {r["id"]: r for r in client.get("/api/series/").json()["results"]}
    assert rows[str(worklist["bad"].pk)]["dominant_artifact"] == "ghosting"


def test_filters_search_and_sorting(api, radiologist_a, worklist):
    client = api.as_(radiologist_a)
    assert _ids(client.get("/api/series/?nondiagnostic=true")) == [str(worklist["bad"].pk)]
    assert _ids(client.get("/api/series/?q=flair")) == [str(worklist["bad"].pk)]
    assert _ids(client.get("/api/series/?ordering=suitability")) == [
        str(worklist[k].pk) for k in ("bad", "good", "new")
    ]
    assert _ids(client.get("/api/series/?ordering=-suitability"))[0] == str(worklist["good"].pk)
    today = timezone.localdate()
    since = (today - datetime.timedelta(days=2)).isoformat()
    assert _ids(client.get(f"/api/series/?received_from={since}")) == [
        str(worklist[k].pk) for k in ("new", "bad")
    ]
    until = (today - datetime.timedelta(days=2)).isoformat()
    assert _ids(client.get(f"/api/series/?received_to={until}")) == [str(worklist["good"].pk)]
    assert client.get("/api/series/?ordering=patient").status_code == 400
    assert client.get("/api/series/?received_from=yesterday").status_code == 400


def test_a_reviewer_verdict_overrides_the_model_and_leaves_the_unreviewed_list(
    api, radiologist_a, worklist
):
    client = api.as_(radiologist_a)
    assert len(_ids(client.get("/api/series/?unreviewed=true"))) == 3
    SeriesReview.objects.create(
        series=worklist["bad"], site=worklist["bad"].site, user=radiologist_a.user,
        verdict="diagnostic",
    )  # fmt: skip
    SeriesReview.objects.create(
        series=worklist["good"], site=worklist["good"].site, user=radiologist_a.user,
        verdict="nondiagnostic",
    )  # fmt: skip
    assert _ids(client.get("/api/series/?nondiagnostic=true")) == [str(worklist["good"].pk)]
    assert _ids(client.get("/api/series/?unreviewed=true")) == [str(worklist["new"].pk)]
    rows = {r["id"]: r for r in client.get("/api/series/").json()["results"]}
    assert rows[str(worklist["good"].pk)]["verdict"] == "nondiagnostic"


def test_paging_and_the_site_filter_stay_within_the_callers_sites(
    api, radiologist_a, superuser, worklist, site_b
):
    page = api.as_(radiologist_a).get("/api/series/?limit=2&offset=2").json()
    assert page["count"] == 3 and [r["id"] for r in page["results"]] == [str(worklist["good"].pk)]
    assert _ids(api.as_(radiologist_a).get(f"/api/series/?site={site_b.pk}")) == []
    assert _ids(api.as_(superuser).get(f"/api/series/?site={site_b.pk}")) == [
        str(worklist["other"].pk)
    ]


def test_search_finds_the_scanner_label(api, radiologist_a, site_a):
    scanner = Scanner.objects.create(site=site_a, pseudonym="p" * 16, label="Skyra room 2")
    series = SeriesFactory(study=StudyFactory(site=site_a), description="T1", scanner=scanner)
    SeriesFactory(study=StudyFactory(site=site_a), description="T2")
    response = api.as_(radiologist_a).get("/api/series/?q=skyra")
    assert _ids(response) == [str(series.pk)]
    assert response.json()["results"][0]["scanner"] == "Skyra room 2"


def test_a_series_counts_its_slices_beside_its_instances(api, radiologist_a, site_a):
    """An Enhanced MR instance holds many slices: the worklist says how many."""
    classic = _series(site_a, "classic")
    for _ in range(3):
        InstanceFactory(series=classic)
    enhanced = _series(site_a, "enhanced")
    InstanceFactory(series=enhanced, frame_count=24)
    InstanceFactory(series=enhanced, frame_count=1)
    _series(site_a, "empty")
    rows = api.as_(radiologist_a).get("/api/series/").json()["results"]
    slices = {r["description"]: r["slice_count"] for r in rows}
    assert slices == {"classic": 3, "enhanced": 25, "empty": 0}
