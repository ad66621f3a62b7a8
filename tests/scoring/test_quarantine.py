"""A slice that makes the scoring fail is tried ARTISCAN_SCORING_MAX_ATTEMPTS times, then
quarantined with its reason, while the rest of its series is scored (security checklist C-03)."""

from __future__ import annotations

import time

import pytest

from backend.ingest.services import series_ingest
from backend.jobs.models import JobRecord
from backend.scoring.models import InstanceScore, SliceAttempt
from backend.scoring.services import SlicesPending, series_score
from backend.studies.models import Series
from tests.deid.builders import mr_dataset, to_bytes
from tests.scoring.builders import undecodable_mr


def _ingest_with_poison(site, numbers=(1, 2, 4), poison=3):
    files = [to_bytes(mr_dataset(i, rows=64, columns=64)) for i in numbers]
    files.append(undecodable_mr(poison))
    series_ingest(site=site, files=files, source="upload")
    series = Series.objects.get(site=site)
    assert series.instances.count() == len(numbers) + 1  # ingest accepted the poison slice
    return series


@pytest.mark.django_db
def test_a_failing_slice_is_retried_then_quarantined_and_the_rest_is_scored(settings, site_a):
    settings.ARTISCAN_SCORING_MAX_ATTEMPTS = 3
    series = _ingest_with_poison(site_a)
    poison = series.instances.get(instance_number=3)
    for attempt in (1, 2):
        with pytest.raises(SlicesPending):
            series_score(series_id=series.pk)
        record = SliceAttempt.objects.get(instance=poison)
        assert record.attempts == attempt and not record.quarantined
        assert record.error.startswith("ScoringError: cannot decode the pixels")
        assert InstanceScore.objects.filter(instance__series=series).count() == 3
    run = series_score(series_id=series.pk)  # third failure: quarantined, no exception
    record = SliceAttempt.objects.get(instance=poison)
    assert record.quarantined and record.attempts == 3
    assert not InstanceScore.objects.filter(instance=poison).exists()
    assert run is not None and run.reason.endswith("1 slice quarantined.")
    series.refresh_from_db()
    assert series.status == "scored" and series.current_run == run
    assert series_score(series_id=series.pk) == run  # nothing left: no more attempts
    assert SliceAttempt.objects.get(instance=poison).attempts == 3


@pytest.mark.django_db
def test_a_slice_whose_worker_died_is_scored_alone_and_quarantined_at_the_limit(settings, site_a):
    """A claim left behind by a killed worker counts as an attempt: the slice is retried alone,
    and quarantined once its attempts reach the limit without a result."""
    from backend.scoring.services import model_version_deployed

    settings.ARTISCAN_SCORING_MAX_ATTEMPTS = 2
    series_ingest(
        site=site_a, files=[to_bytes(mr_dataset(i, rows=64, columns=64)) for i in (1, 2)],
        source="upload",
    )  # fmt: skip
    series = Series.objects.get(site=site_a)
    first, second = series.instances.order_by("instance_number")
    version = model_version_deployed()
    # Two earlier deliveries died on slice 1 (their claims expired); slice 2 died once.
    SliceAttempt.objects.create(instance=first, model_version=version, site=site_a, attempts=2)
    SliceAttempt.objects.create(instance=second, model_version=version, site=site_a, attempts=1)
    series_score(series_id=series.pk)
    assert SliceAttempt.objects.get(instance=first).quarantined
    assert "worker lost" in SliceAttempt.objects.get(instance=first).error
    assert InstanceScore.objects.filter(instance=second).count() == 1
    assert SliceAttempt.objects.get(instance=second).attempts == 2


@pytest.mark.django_db
def test_a_killed_workers_claim_frees_its_slices_after_the_claim_time(settings, site_a):
    """A worker claims a batch and is killed before writing (its message lost with it): its
    claim holds for ARTISCAN_SCORING_CLAIM_S, not for the broker's hour. Another delivery
    skips the slices while the claim holds and scores them once it has run out."""
    from datetime import timedelta

    from django.utils import timezone

    from backend.scoring.services import _claim, model_version_deployed

    settings.ARTISCAN_SCORING_CLAIM_S = 120
    series_ingest(
        site=site_a, files=[to_bytes(mr_dataset(i, rows=64, columns=64)) for i in (1, 2)],
        source="upload",
    )  # fmt: skip
    series = Series.objects.get(site=site_a)
    version = model_version_deployed()
    before = timezone.now()
    claim = _claim(series.pk, version, "killed-task", set())  # ... and then the worker died
    assert claim is not None and len(claim.instances) == 2
    attempts = SliceAttempt.objects.filter(instance__series=series)
    for attempt in attempts:
        held = attempt.claimed_until - before
        assert timedelta(seconds=119) <= held <= timedelta(seconds=130)
    assert series_score(series_id=series.pk) is not None  # another delivery, at once
    assert not InstanceScore.objects.filter(instance__series=series).exists()
    attempts.update(claimed_until=timezone.now() - timedelta(seconds=1))  # 120 s later
    series_score(series_id=series.pk)
    assert InstanceScore.objects.filter(instance__series=series).count() == 2


@pytest.mark.django_db
def test_the_result_api_shows_the_quarantined_slice_and_its_reason(
    settings, api, radiologist_a, site_a
):
    settings.ARTISCAN_SCORING_MAX_ATTEMPTS = 1
    series = _ingest_with_poison(site_a)
    series_score(series_id=series.pk)
    body = api.as_(radiologist_a).get(f"/api/series/{series.pk}/result/").json()
    assert [i["instance_number"] for i in body["instances"]] == [1, 2, 4]
    [quarantined] = body["quarantined"]
    assert quarantined["instance_number"] == 3 and quarantined["attempts"] == 1
    assert quarantined["reason"].startswith("ScoringError: cannot decode the pixels")


@pytest.mark.django_db(transaction=True)
@pytest.mark.servers
def test_the_worker_quarantines_a_poison_slice_and_scores_the_rest(celery_worker_process, site_a):
    """Through the real worker process: ingest queues the tasks, the poison slice fails three
    times (Celery retries with a delay), is quarantined, and the job ends done."""
    series = _ingest_with_poison(site_a)
    poison = series.instances.get(instance_number=3)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        attempt = SliceAttempt.objects.filter(instance=poison).first()
        if attempt is not None and attempt.quarantined:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"not quarantined: {SliceAttempt.objects.filter(instance=poison)}")
    assert attempt.attempts == 3 and attempt.error.startswith("ScoringError")
    assert InstanceScore.objects.filter(instance__series=series).count() == 3
    assert not InstanceScore.objects.filter(instance=poison).exists()
    series.refresh_from_db()
    assert series.status == "scored"
    jobs = JobRecord.objects.filter(subject=str(series.pk))
    deadline = time.monotonic() + 60
    while jobs.filter(state__in=["running", "failed"]).exists() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert set(jobs.values_list("state", flat=True)) == {"done"}


@pytest.mark.django_db
def test_an_instance_refused_by_what_it_is_is_quarantined_at_once_and_the_rest_is_scored(
    settings, site_a
):
    """A colour image is no MR slice the model can read: quarantined at its first failure,
    not tried again (no SlicesPending, which would have the task retried), while an
    undecodable slice is."""
    from pydicom.uid import generate_uid

    settings.ARTISCAN_SCORING_MAX_ATTEMPTS = 3
    colour = mr_dataset(3, rows=64, columns=64)
    colour.SOPInstanceUID = generate_uid()
    colour.SamplesPerPixel, colour.PhotometricInterpretation, colour.PlanarConfiguration = (
        3,
        "RGB",
        0,
    )
    colour.BitsAllocated = colour.BitsStored = 8
    colour.HighBit, colour.PixelRepresentation = 7, 0
    colour.PixelData = bytes(64 * 64 * 3)
    files = [to_bytes(mr_dataset(i, rows=64, columns=64)) for i in (1, 2)] + [to_bytes(colour)]
    outcomes = series_ingest(site=site_a, files=files, source="upload")
    series = Series.objects.get(site=site_a)
    assert [o.status for o in outcomes] == ["accepted"] * 3
    run = series_score(series_id=series.pk)
    record = SliceAttempt.objects.get(instance__instance_number=3)
    assert record.quarantined and record.attempts == 1
    assert record.error.startswith("InputRefused: ") and "greyscale" in record.error
    series.refresh_from_db()
    assert series.status == "scored" and run is not None
    assert run.reason.endswith("1 slice quarantined.")
    assert InstanceScore.objects.filter(run=run).count() == 2


@pytest.mark.django_db
def test_a_model_that_cannot_be_loaded_charges_no_slice(settings, site_a, tmp_path):
    """The deployed version's weights are missing on this host (a second GPU host whose
    checkout sits elsewhere): every try fails, none is charged to a slice, nothing is
    quarantined however often it is tried, and once the weights are there everything is
    scored."""
    from backend.scoring.services import model_version_deployed

    settings.ARTISCAN_SCORING_MAX_ATTEMPTS = 2
    series_ingest(
        site=site_a, files=[to_bytes(mr_dataset(i, rows=64, columns=64)) for i in (1, 2, 3)],
        source="upload",
    )  # fmt: skip
    series = Series.objects.get(site=site_a)
    version = model_version_deployed()
    shipped = version.weights_key
    version.weights_key = str(tmp_path / "elsewhere" / "artiscan-full.keras")
    version.save(update_fields=["weights_key"])
    for _ in range(4):
        with pytest.raises(FileNotFoundError):
            series_score(series_id=series.pk, model_version=version)
    attempts = SliceAttempt.objects.filter(instance__series=series)
    assert attempts.count() == 3
    assert all(a.attempts == 0 and not a.quarantined and a.claimed_until is None for a in attempts)
    assert not InstanceScore.objects.filter(instance__series=series).exists()

    version.weights_key = shipped
    version.save(update_fields=["weights_key"])
    run = series_score(series_id=series.pk, model_version=version)
    assert run is not None and run.status == "done"
    assert InstanceScore.objects.filter(run=run).count() == 3


@pytest.mark.django_db
def test_a_comparison_run_leaves_the_series_state_alone(site_a, tmp_path):
    """A series scored by the deployed model is scored again by a version that is not deployed
    (``rescore --model``), which fails (its weights are not on this host): the series still
    shows "scored" and the deployed run — not "scoring" for ever."""
    from backend.scoring.models import ModelVersion
    from backend.scoring.services import model_version_deployed

    series_ingest(
        site=site_a, files=[to_bytes(mr_dataset(i, rows=64, columns=64)) for i in (1, 2)],
        source="upload",
    )  # fmt: skip
    series = Series.objects.get(site=site_a)
    deployed_run = series_score(series_id=series.pk)
    other = ModelVersion.objects.create(
        name="candidate", version="c1", sha256="c" * 64, classes=[],
        weights_key=str(tmp_path / "candidate.keras"),
    )  # fmt: skip
    assert model_version_deployed() != other
    with pytest.raises(FileNotFoundError):
        series_score(series_id=series.pk, model_version=other)
    series.refresh_from_db()
    assert series.status == "scored" and series.current_run == deployed_run


@pytest.mark.django_db
def test_a_rollback_while_a_batch_is_computed_is_not_undone_by_its_write(site_a, admin_a, tmp_path):
    """The series shows version 1's run. Version 2 is promoted and a worker claims and computes
    the series for it; before it writes, version 2 is rolled back. The write stores version
    2's scores under its own run, but the series keeps showing version 1 (the deployed flag is
    read when writing, not from before the rollback)."""

    from backend.scoring.models import ScoringRun
    from backend.scoring.services import (
        _claim,
        _compute,
        _write,
        model_promote,
        model_rollback,
        model_version_register,
    )

    series_ingest(
        site=site_a, files=[to_bytes(mr_dataset(i, rows=64, columns=64)) for i in (1, 2)],
        source="upload",
    )  # fmt: skip
    series = Series.objects.get(site=site_a)
    first = series_score(series_id=series.pk)
    from tests.scoring.test_registry import _candidate

    # With its thresholds sidecar, as a trainer leaves it (the store's copy is shared by content
    # with the other tests of the session).
    second = model_version_register(
        weights_path=_candidate(tmp_path), name="candidate", version="2", metrics={}
    )
    model_promote(model_version=second, user=admin_a.user, reason="try the pruned one")
    claim = _claim(series.pk, second, "worker-1", set())
    scored, failed = _compute(claim.run, claim.instances)
    model_rollback(user=admin_a.user, reason="worse on FLAIR")
    _write(claim.run, scored, failed)
    series.refresh_from_db()
    assert ScoringRun.objects.get(pk=claim.run.pk).instance_scores.count() == 2
    assert series.current_run_id == first.pk
    assert series.status == "scored"  # not left "scoring" by the claim before the rollback


@pytest.mark.django_db
def test_the_write_that_quarantines_the_last_slice_asks_for_the_seg(
    settings, site_a, django_capture_on_commit_callbacks
):
    """Three slices are scored while the fourth is still to be retried (no SEG yet: the series
    waits for it); its last failure quarantines it on a write that scores nothing, and that
    write asks for the SEG of the three (it asked for nothing, and the SEG never came)."""

    def seg_requests(callbacks):  # what run_seg_schedule leaves to run after the commit
        return [c for c in callbacks if "run_seg_schedule" in getattr(c, "__qualname__", "")]

    settings.ARTISCAN_SCORING_MAX_ATTEMPTS = 2
    series = _ingest_with_poison(site_a)
    with django_capture_on_commit_callbacks() as first:
        with pytest.raises(SlicesPending):
            series_score(series_id=series.pk)
    assert InstanceScore.objects.filter(instance__series=series).count() == 3
    assert seg_requests(first) == []  # the fourth slice is still to come
    with django_capture_on_commit_callbacks() as second:
        series_score(series_id=series.pk)
    assert SliceAttempt.objects.get(instance__instance_number=3).quarantined
    assert len(seg_requests(second)) == 1
