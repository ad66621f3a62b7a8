"""Model registry: the configured weights are only the initial default; promote → re-score →
both runs readable; rollback restores the previous version and its results."""

from __future__ import annotations

import shutil
import time

import pytest
from django.core.management import call_command

from backend.audit.models import AuditEvent
from backend.ingest.services import series_ingest
from backend.scoring.models import ModelPromotion, ModelVersion, RescoreJob, ScoringRun
from backend.scoring.services import (
    ModelRegistryError,
    model_promote,
    model_rollback,
    model_version_deployed,
    model_version_register,
    model_weights_local,
    series_rescore,
    series_score,
)
from backend.studies.models import Series
from ml.pipeline import SHIPPED, get_pipeline
from tests.deid.builders import mr_dataset, to_bytes


def _candidate(tmp_path):
    """The pruned ONNX weights as if freshly trained: a file outside ml/weights (copied into the
    store on registration), with its thresholds sidecar."""
    weights = tmp_path / "candidate.onnx"
    shutil.copy(SHIPPED["pruned-onnx"], weights)
    shutil.copy(
        SHIPPED["pruned-onnx"].with_name("artiscan-pruned.thresholds.json"),
        tmp_path / "candidate.thresholds.json",
    )
    return weights


def _wait(predicate, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


@pytest.mark.django_db
def test_the_configured_weights_are_only_the_initial_default(settings, tmp_path, admin_a):
    initial = model_version_deployed()
    assert initial.weights_key == str(SHIPPED["full"].resolve())
    assert ModelPromotion.objects.get().kind == "initial"
    candidate = model_version_register(
        weights_path=_candidate(tmp_path), name="artiscan-pruned", version="2", metrics={"auc": 1}
    )
    assert candidate.weights_key.startswith("models/") and not candidate.is_deployed
    model_promote(model_version=candidate, user=admin_a.user, reason="better on campaign 3")
    # A restart with the configured file (or another one) does not undo the promotion.
    settings.ARTISCAN_MODEL_WEIGHTS = "full"
    assert model_version_deployed() == candidate
    settings.ARTISCAN_MODEL_WEIGHTS = str(SHIPPED["full-onnx"])
    assert model_version_deployed() == candidate
    assert ModelVersion.objects.filter(is_deployed=True).count() == 1


@pytest.mark.django_db
def test_registration_is_idempotent_by_content_and_keeps_a_loadable_copy(tmp_path, settings):
    weights = _candidate(tmp_path)
    first = model_version_register(weights_path=weights, name="c", version="1", metrics={})
    again = model_version_register(weights_path=weights, name="other", version="9", metrics={})
    assert again == first and ModelVersion.objects.count() == 1
    weights.unlink()  # the trainer's file may go away: workers load the stored copy
    local = model_weights_local(first)
    assert local.is_file() and local.with_name("candidate.thresholds.json").is_file()
    assert get_pipeline(local).weights == local
    with pytest.raises(ModelRegistryError):
        model_version_register(weights_path=SHIPPED["full-onnx"], name="c", version="1", metrics={})


@pytest.mark.django_db
def test_promotions_are_recorded_and_rollback_walks_back(tmp_path, admin_a):
    initial = model_version_deployed()
    candidate = model_version_register(
        weights_path=_candidate(tmp_path), name="cand", version="2", metrics={}
    )
    with pytest.raises(ModelRegistryError):
        model_rollback(user=admin_a.user, reason="nothing before the initial default")
    with pytest.raises(ModelRegistryError):
        model_promote(model_version=candidate, user=admin_a.user, reason="  ")
    promotion = model_promote(model_version=candidate, user=admin_a.user, reason="why not")
    assert (promotion.previous, promotion.promoted_by, promotion.reason) == (
        initial,
        admin_a.user,
        "why not",
    )
    with pytest.raises(ModelRegistryError):
        model_promote(model_version=candidate, user=admin_a.user, reason="twice")
    back = model_rollback(user=None, reason="worse on site B")
    assert back.kind == "rollback" and back.model_version == initial and back.previous == candidate
    assert model_version_deployed() == initial
    assert AuditEvent.objects.filter(object_type="model_version").count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.servers
def test_promote_rescore_both_runs_readable_and_rollback_restores(
    celery_worker_process, tmp_path, api, radiologist_a, admin_a, site_a
):
    series_ingest(
        site=site_a, files=[to_bytes(mr_dataset(i, rows=64, columns=64)) for i in (1, 2, 3)],
        source="upload",
    )  # fmt: skip
    series = Series.objects.get(site=site_a)
    initial = model_version_deployed()
    # Ingest queued the scoring with the initial version; wait for it.
    assert _wait(lambda: ScoringRun.objects.filter(series=series, status="done").exists())
    assert _wait(lambda: series_score(series_id=series.pk).instance_scores.count() == 3)
    first = api.as_(radiologist_a).get(f"/api/series/{series.pk}/result/").json()
    assert first["model"] == str(initial)

    candidate = model_version_register(
        weights_path=_candidate(tmp_path), name="artiscan-pruned", version="2", metrics={}
    )
    model_promote(model_version=candidate, user=admin_a.user, reason="campaign 3 figures")
    job = series_rescore(series_ids=[series.pk], requested_by=admin_a.user)
    assert job.total == 1 and job.model_version == candidate
    assert _wait(lambda: RescoreJob.objects.get(pk=job.pk).finished_at is not None)
    assert RescoreJob.objects.get(pk=job.pk).done == 1

    current = api.as_(radiologist_a).get(f"/api/series/{series.pk}/result/").json()
    assert current["model"] == "artiscan-pruned 2" and len(current["instances"]) == 3
    older = (
        api.as_(radiologist_a)
        .get(f"/api/series/{series.pk}/result/", {"model": initial.version})
        .json()
    )
    assert older["model"] == str(initial)
    assert [i["suitability_index"] for i in older["instances"]] == [
        i["suitability_index"] for i in first["instances"]
    ]
    assert {(r["model"], r["current"]) for r in current["runs"]} == {
        (str(initial), False),
        ("artiscan-pruned 2", True),
    }
    missing = api.as_(radiologist_a).get(f"/api/series/{series.pk}/result/", {"model": "nope"})
    assert missing.status_code == 404

    call_command("model_rollback", reason="worse on site B", user="admin_a")
    restored = api.as_(radiologist_a).get(f"/api/series/{series.pk}/result/").json()
    assert restored["model"] == str(initial)
    assert restored["suitability_index"] == first["suitability_index"]
    series.refresh_from_db()
    assert series.current_run.model_version == initial


@pytest.mark.django_db(transaction=True)
@pytest.mark.servers
def test_the_rescore_command_waits_with_a_progress_bar(
    celery_worker_process, tmp_path, site_a, capsys
):
    series_ingest(
        site=site_a, files=[to_bytes(mr_dataset(i, rows=64, columns=64)) for i in (1, 2)],
        source="upload",
    )  # fmt: skip
    model_version_deployed()
    candidate = model_version_register(
        weights_path=_candidate(tmp_path), name="cand", version="7", metrics={}
    )
    call_command("model_promote", "cand", "7", reason="try it")
    call_command("rescore", site=site_a.pk, timeout=180)
    out, err = capsys.readouterr()
    assert "done: 1 of 1 series scored" in out
    assert "1/1" in err  # the progress bar
    series = Series.objects.get(site=site_a, modality="MR")  # its SEGs are series too
    assert series.current_run.model_version == candidate
