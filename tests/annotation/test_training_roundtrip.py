"""Export -> fine-tune (tiny, CPU, through a real Celery worker on the gpu queue) -> evaluate
-> promote -> roll back, and the AI-assist re-run through the same worker."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from annotation import services, training
from annotation.models import Assignment, FineTune
from annotation.rle import rle_decode
from backend.scoring.models import ModelPromotion, ModelVersion
from tests.annotation.conftest import SIZE, ingest_series

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


def _series_covering_every_split(site):
    """Series until the fixed per-series split has put one in train, val and test."""
    found: dict[str, list] = {"train": [], "val": [], "test": []}
    number = 100
    while not all(found.values()):
        series = ingest_series(site, number, slices=2, size=SIZE)
        found[training.series_split(series.series_uid)].append(series)
        number += 1
        assert number < 200
    return [s for group in found.values() for s in group]


def _read_everything(campaign, reader):
    rng = np.random.default_rng(0)
    for assignment in Assignment.objects.filter(campaign=campaign, reader=reader.user):
        for k, instance in enumerate(assignment.series.instances.order_by("instance_number")):
            mask = np.zeros((SIZE, SIZE), np.uint8)
            r, c = rng.integers(0, SIZE - 8, size=2)
            mask[r : r + 8, c : c + 8] = 1
            services.annotation_save(
                user=reader.user,
                assignment=assignment,
                instance_id=instance.pk,
                masks={"motion": mask},
                diagnostic=bool(k % 2),
                time_spent_ms=1000,
            )


def test_export_finetune_evaluate_promote_and_roll_back(
    api, celery_worker_process, site_a, annotator_a, radiologist_a
):
    from tests.conftest import _persona

    lead = _persona("lead_rt", site_a, "annotation_lead")
    series = _series_covering_every_split(site_a)
    campaign = services.campaign_create(
        user=lead.user,
        site_id=site_a.pk,
        name="round trip",
        artifact_types=["motion"],
        readers_per_image=1,
        blinded=False,
        reader_ids=[annotator_a.user.pk],
    )
    _read_everything(campaign, annotator_a)

    # AI assist: the deployed model re-run on one slice by the gpu worker.
    assignment = Assignment.objects.filter(campaign=campaign).first()
    instance = assignment.series.instances.first()
    assisted = api.as_(annotator_a).post(
        f"/api/assignments/{assignment.pk}/instances/{instance.pk}/assist/",
        {"hints": [[16, 16]]},
        format="json",
    )
    assert assisted.status_code == 200, assisted.content
    assert set(assisted.json()["masks"]) <= {"motion"} and assisted.json()["hints"] == 1
    for runs in assisted.json()["masks"].values():
        assert rle_decode(runs, (SIZE, SIZE)).shape == (SIZE, SIZE)

    response = api.as_(lead).post(
        f"/api/campaigns/{campaign.pk}/training-sets/", {"simulated_ratio": 0.5}, format="json"
    )
    assert response.status_code == 201, response.content
    exported = response.json()
    annotated = 2 * len(series)
    assert sum(exported["annotated_slices"].values()) == annotated
    assert exported["simulated_slices"] >= annotated and exported["verified"] is True
    root = Path(exported["path"])
    manifest = json.loads((root / "manifest.json").read_text())
    assert {s["path"].split("/")[0] for s in manifest["shards"]} == {"annotated", "simulated"}
    assert not (root / "manifest.json").stat().st_mode & 0o222  # read-only
    # exactly what `python -m ml train` reads
    from ml.model.data import load_split

    assert len(load_split(root, "train")) == exported["annotated_slices"]["train"] + sum(
        s["slices"]
        for s in manifest["shards"]
        if s["path"].startswith("simulated/") and s["split"] == "train"
    )
    held_out = load_split(root / "annotated", "test")
    assert len(held_out) == exported["annotated_slices"]["test"]
    assert held_out.masks[0].shape == (10, SIZE, SIZE)
    # a second export is a new version; the first one is untouched
    again = api.as_(lead).post(f"/api/campaigns/{campaign.pk}/training-sets/", {}, format="json")
    assert again.json()["version"] == 2 and again.json()["simulated_slices"] == 0

    started = api.as_(lead).post(
        f"/api/training-sets/{exported['id']}/finetune/",
        {"epochs": 2, "steps": 2, "crop": SIZE, "batch": 2},
        format="json",
    )
    assert started.status_code == 201, started.content
    job_id = started.json()["id"]
    assert api.as_(annotator_a).get(f"/api/finetunes/{job_id}/").status_code == 403
    seen_progress = set()
    deadline = time.monotonic() + 540
    while time.monotonic() < deadline:
        job = api.as_(lead).get(f"/api/finetunes/{job_id}/").json()
        seen_progress.add(job["progress"])
        if job["status"] in ("done", "failed"):
            break
        time.sleep(1)
    assert job["status"] == "done", (
        job,
        Path(FineTune.objects.get(pk=job_id).out_dir, "runner.log").read_text()[-3000:],
    )
    assert job["progress"] == 1.0 and len(seen_progress) >= 2
    for who in ("candidate", "deployed"):
        for data in ("annotated", "simulated"):
            figures = job["metrics"][who][data]
            assert figures["slices"] >= 1 and "frequency_weighted_iou" in figures
            assert set(figures["iou"]) >= {"motion", "noise"}
    candidate = ModelVersion.objects.get(pk=job["candidate"]["id"])
    assert not candidate.is_deployed and candidate.metrics == job["metrics"]
    assert "training set" in candidate.card
    before = ModelVersion.objects.get(is_deployed=True)

    promote = f"/api/finetunes/{job_id}/promote/"
    assert api.as_(annotator_a).post(promote, {"reason": "x"}, format="json").status_code == 403
    promoted = api.as_(lead).post(promote, {"reason": "better on our motion cases"}, format="json")
    assert promoted.status_code == 200, promoted.content
    assert promoted.json()["candidate"]["deployed"] is True
    record = ModelPromotion.objects.filter(model_version=candidate).latest("created_at")
    assert record.promoted_by == lead.user and record.reason == "better on our motion cases"

    rolled = api.as_(lead).post(
        f"/api/campaigns/{campaign.pk}/rollback/", {"reason": "undo"}, format="json"
    )
    assert rolled.status_code == 200, rolled.content
    assert ModelVersion.objects.get(is_deployed=True) == before
