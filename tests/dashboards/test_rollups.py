"""Rollups against values computed by hand on a small fixture."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from backend.dashboards.models import ArtifactRollup, QualityRollup
from backend.dashboards.selectors import Filters, summary_table, trend
from backend.dashboards.services import rollups_refresh
from tests.dashboards.factories import BASE_WEEK

pytestmark = pytest.mark.django_db


@pytest.fixture
def fixture_rows(site_a, make_scanner, make_scored):
    """Week 0, scanner S1, protocol t2_tse_ax (SE), one study with a repeat:
      series 1: suit 0.9, motion, 2 instances, verdict 1 s
      series 2 (same study, same protocol, later): suit 0.3, non-diagnostic, motion + spike,
                2 instances, verdict 3 s
      series 3 (other study): suit 0.6, ghosting, 4 instances, verdict 2 s
    Week 1, same cell: series 4: suit 1.0, nothing.
    Week 0, protocol flair (FLAIR): series 5: suit 0.2, non-diagnostic, 1 instance, verdict 5 s.
    """
    s1 = make_scanner(site_a, "S1")
    first = make_scored(site=site_a, scanner=s1, week=0, suitability=0.9, artifacts=("motion",))
    make_scored(
        site=site_a, scanner=s1, week=0, suitability=0.3, nondiagnostic=True,
        artifacts=("motion", "spike"), delay_s=3.0, study=first.study, minute=20,
    )  # fmt: skip
    make_scored(
        site=site_a, scanner=s1, week=0, suitability=0.6, artifacts=("ghosting",),
        instances=4, delay_s=2.0,
    )  # fmt: skip
    make_scored(site=site_a, scanner=s1, week=1, suitability=1.0)
    make_scored(
        site=site_a, scanner=s1, week=0, protocol="t2_flair_ax", family="FLAIR",
        suitability=0.2, nondiagnostic=True, instances=1, delay_s=5.0,
    )  # fmt: skip
    return s1


def test_a_refresh_rolls_the_scored_series_up_into_hand_computed_cells(fixture_rows, site_a):
    result = rollups_refresh()
    assert result.cells == 3
    cell = QualityRollup.objects.get(week=BASE_WEEK, protocol="t2_tse_ax")
    assert cell.sequence_family == "SE"
    assert cell.series_scored == 3
    assert cell.series_nondiagnostic == 1
    assert cell.series_repeated == 1
    assert cell.suitability_sum == pytest.approx(0.9 + 0.3 + 0.6)
    assert cell.instances_scored == 8
    assert cell.verdict_seconds_sum == pytest.approx(2 * 1.0 + 2 * 3.0 + 4 * 2.0)
    counts = dict(
        ArtifactRollup.objects.filter(rollup=cell).values_list("artifact_type", "series_with")
    )
    # Series-level: two series with motion (one with it on both slices counts once).
    assert counts == {"motion": 2, "spike": 1, "ghosting": 1}


def test_the_summary_table_gives_rates_means_and_repeat_rate(fixture_rows, admin_a):
    rollups_refresh()
    rows = summary_table(
        user=admin_a.user,
        filters=Filters(week_from=BASE_WEEK, week_to=BASE_WEEK + dt.timedelta(weeks=1)),
    )
    by_protocol = {r["protocol"]: r for r in rows}
    tse = by_protocol["t2_tse_ax"]
    assert tse["series"] == 4
    assert tse["nondiagnostic_rate"] == pytest.approx(1 / 4)
    assert tse["motion_rate"] == pytest.approx(2 / 4)
    assert tse["spike_rate"] == pytest.approx(1 / 4)
    assert tse["noise_rate"] == 0
    assert tse["mean_suitability"] == pytest.approx((0.9 + 0.3 + 0.6 + 1.0) / 4)
    assert tse["repeat_rate"] == pytest.approx(1 / 4)
    assert tse["mean_verdict_s"] == pytest.approx((16 + 2) / 10)  # week 1: 2 slices at 1 s
    flair = by_protocol["t2_flair_ax"]
    assert (flair["series"], flair["nondiagnostic_rate"], flair["mean_verdict_s"]) == (1, 1.0, 5.0)


def test_the_trend_has_wilson_intervals_per_week(fixture_rows, admin_a):
    rollups_refresh()
    rows = trend(
        user=admin_a.user,
        filters=Filters(week_from=BASE_WEEK, week_to=BASE_WEEK + dt.timedelta(weeks=2)),
    )
    assert [r["series"] for r in rows] == [4, 1, 0]
    week0 = rows[0]
    assert week0["nondiagnostic_rate"] == pytest.approx(2 / 4)
    # Wilson 95 % for 2/4, by hand: centre (0.5 + z²/8)/(1 + z²/4) = 0.5, half-width
    # z·sqrt(0.25/4 + z²/64)/(1 + z²/4) = 1.96·0.35003/1.96037 = 0.34996
    assert week0["nondiagnostic_low"] == pytest.approx(0.5 - 0.34996, abs=1e-3)
    assert week0["nondiagnostic_high"] == pytest.approx(0.5 + 0.34996, abs=1e-3)
    assert rows[2]["nondiagnostic_rate"] is None


def test_a_later_refresh_only_rebuilds_the_weeks_that_changed(fixture_rows, site_a, make_scored):
    rollups_refresh()
    untouched = QualityRollup.objects.get(week=BASE_WEEK + dt.timedelta(weeks=1))
    make_scored(
        site=site_a, scanner=fixture_rows, week=0, suitability=0.5, artifacts=("noise",),
        finished_at=timezone.now(),  # a late series of an old week, scored just now
    )  # fmt: skip
    result = rollups_refresh()
    assert result.site_weeks == 1
    cell = QualityRollup.objects.get(week=BASE_WEEK, protocol="t2_tse_ax")
    assert cell.series_scored == 4
    assert QualityRollup.objects.filter(pk=untouched.pk).exists()  # not rebuilt


def test_the_frames_of_a_multi_frame_instance_count_it_once(site_a, make_scanner, make_scored):
    """An Enhanced MR instance has one score per frame; it is one instance scored, with one
    verdict delay, not one per frame."""
    from backend.scoring.models import InstanceScore

    series = make_scored(
        site=site_a, scanner=make_scanner(site_a, "S1"), week=0, suitability=0.9, instances=1,
        delay_s=2.0,
    )  # fmt: skip
    score = InstanceScore.objects.get(run=series.current_run)
    for frame in (2, 3):
        InstanceScore.objects.create(
            run=score.run, instance=score.instance, frame=frame, suitability=0.5,
            nondiagnostic=False, created_at=score.created_at,
        )  # fmt: skip
    rollups_refresh()
    cell = QualityRollup.objects.get(week=BASE_WEEK)
    assert cell.instances_scored == 1
    assert cell.verdict_seconds_sum == pytest.approx(2.0)


def test_a_finding_a_radiologist_rejects_leaves_the_counts_at_the_next_refresh(
    fixture_rows, site_a, admin_a, radiologist_a, api
):
    """Series 2's spike and series 1's motion (both slices) are rejected through the review
    API after the first refresh: the next incremental refresh rebuilds their week although no
    series was scored since, and the drill-down behind the motion bar lists series 2 only."""
    from backend.scoring.models import Finding

    rollups_refresh()
    client = api.as_(radiologist_a)
    series_2 = Finding.objects.filter(artifact_type="spike").first().run.series
    first_motion = Finding.objects.exclude(run__series=series_2).filter(
        artifact_type="motion", run__series__study=series_2.study
    )
    spike = Finding.objects.filter(artifact_type="spike")
    for finding in [*first_motion, *spike]:
        answer = client.post(f"/api/findings/{finding.pk}/reviews/", {"action": "reject"})
        assert answer.status_code == 201, answer.content
    # An accepted finding still counts.
    ghosting = Finding.objects.filter(artifact_type="ghosting").first()
    assert (
        client.post(f"/api/findings/{ghosting.pk}/reviews/", {"action": "accept"}).status_code
        == 201
    )

    result = rollups_refresh()
    assert result.site_weeks == 1
    cell = QualityRollup.objects.get(week=BASE_WEEK, protocol="t2_tse_ax")
    counts = dict(
        ArtifactRollup.objects.filter(rollup=cell).values_list("artifact_type", "series_with")
    )
    assert counts == {"motion": 1, "ghosting": 1}
    assert cell.series_scored == 3  # the series stay; only the rejected findings go
    week = {"week_from": BASE_WEEK.isoformat(), "week_to": BASE_WEEK.isoformat()}
    listed = api.as_(admin_a).get("/api/dashboards/series/", {**week, "metric": "motion"})
    assert listed.status_code == 200, listed.content
    assert [row["id"] for row in listed.json()["rows"]] == [str(series_2.pk)]


def test_a_promotion_rebuilds_the_weeks_whose_series_it_points_at_older_runs(
    fixture_rows, site_a, model_version
):
    """Series 2 (non-diagnostic under version 1) was also scored by version 2, weeks ago and
    diagnostic. Deploying version 2 points the series at that old run: the next incremental
    refresh rebuilds its week although no run finished since the last pass."""
    from backend.scoring.models import ModelVersion, RunStatus, ScoringRun
    from backend.scoring.services import model_promote
    from backend.studies.models import Series

    ModelVersion.objects.filter(pk=model_version.pk).update(is_deployed=True)
    rollups_refresh()
    cell = QualityRollup.objects.get(week=BASE_WEEK, protocol="t2_tse_ax")
    assert cell.series_nondiagnostic == 1
    second = Series.objects.get(current_run__nondiagnostic=True, protocol="t2_tse_ax")
    v2 = ModelVersion.objects.create(
        name="test", version="2", sha256="e" * 64, weights_key="w2", classes=[]
    )
    ScoringRun.objects.create(
        series=second, site=site_a, model_version=v2, status=RunStatus.DONE, suitability=0.8,
        nondiagnostic=False, finished_at=second.current_run.finished_at,
    )  # fmt: skip
    model_promote(model_version=v2, user=None, reason="better on FLAIR")
    result = rollups_refresh()
    assert result.site_weeks == 1
    cell = QualityRollup.objects.get(week=BASE_WEEK, protocol="t2_tse_ax")
    assert cell.series_nondiagnostic == 0
    assert cell.suitability_sum == pytest.approx(0.9 + 0.8 + 0.6)


def test_a_rescoring_weeks_later_does_not_make_the_verdicts_slow(
    fixture_rows, site_a, model_version
):
    """Series 3 is scored again today by version 2, which is then deployed: its slices' verdict
    delay stays the 2 s of their first scoring, not the weeks since they arrived."""
    from backend.scoring.models import InstanceScore, ModelVersion, RunStatus, ScoringRun
    from backend.scoring.services import model_promote
    from backend.studies.models import Series

    ModelVersion.objects.filter(pk=model_version.pk).update(is_deployed=True)
    third = Series.objects.get(current_run__suitability=0.6)
    v2 = ModelVersion.objects.create(
        name="test", version="2", sha256="f" * 64, weights_key="w2", classes=[]
    )
    run = ScoringRun.objects.create(
        series=third, site=site_a, model_version=v2, status=RunStatus.DONE, suitability=0.6,
        nondiagnostic=False, finished_at=timezone.now(),
    )  # fmt: skip
    for instance in third.instances.all():
        InstanceScore.objects.create(
            run=run, instance=instance, suitability=0.6, nondiagnostic=False,
            created_at=timezone.now(),
        )  # fmt: skip
    model_promote(model_version=v2, user=None, reason="re-scored the archive")
    rollups_refresh()
    cell = QualityRollup.objects.get(week=BASE_WEEK, protocol="t2_tse_ax")
    assert cell.instances_scored == 8
    assert cell.verdict_seconds_sum == pytest.approx(2 * 1.0 + 2 * 3.0 + 4 * 2.0)
