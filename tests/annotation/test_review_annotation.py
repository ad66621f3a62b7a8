"""Review findings on the annotation API: bad labels and hint clicks are a 400 (never a 500),
list endpoints do not query once per row, and the agreement CSV cannot carry a formula."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotation.models import Assignment
from annotation.rle import rle_encode
from tests.annotation.conftest import SIZE, ingest_series, square
from tests.conftest import _persona

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_store")]


@pytest.fixture
def series_a(site_a):
    return [ingest_series(site_a, n) for n in (1, 2)]


def create(api, lead, site, **extra):
    body = {
        "site_id": site.pk,
        "name": "Motion",
        "artifact_types": ["motion", "noise"],
        "readers_per_image": 2,
        **extra,
    }
    response = api.as_(lead).post("/api/campaigns/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _first_slice(api, persona):
    assignment = api.as_(persona).get("/api/annotate/queue/").json()["next"]["id"]
    detail = api.as_(persona).get(f"/api/assignments/{assignment}/").json()
    return assignment, detail["instances"][0]["id"]


@pytest.mark.parametrize("types_present", [["not_a_type"], ["gibbs"], [""]])
def test_a_reading_with_a_type_outside_the_campaign_is_a_400(
    api, lead_a, annotator_a, reader2_a, series_a, site_a, types_present
):
    create(api, lead_a, site_a)
    assignment, instance = _first_slice(api, annotator_a)
    response = api.as_(annotator_a).post(
        f"/api/assignments/{assignment}/instances/{instance}/annotation/",
        {"masks": {}, "types_present": types_present},
        format="json",
    )
    assert response.status_code == 400


@pytest.mark.parametrize("types_present", [["not_a_type"], ["gibbs"]])
def test_an_adjudication_with_a_type_outside_the_campaign_is_a_400(
    api, lead_a, annotator_a, reader2_a, series_a, site_a, types_present
):
    campaign = create(api, lead_a, site_a, series_ids=[str(series_a[0].pk)])
    assignment, instance = _first_slice(api, annotator_a)
    api.as_(annotator_a).post(
        f"/api/assignments/{assignment}/instances/{instance}/annotation/",
        {"masks": {"motion": square(0, 4, 0, 4)}},
        format="json",
    )
    response = api.as_(lead_a).post(
        f"/api/campaigns/{campaign}/adjudications/",
        {"instance_id": instance, "method": "majority", "types_present": types_present},
        format="json",
    )
    assert response.status_code == 400


class _Result:
    def get(self, timeout: float) -> dict[str, list[int]]:
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[4:8, 4:8] = 1
        return {"motion": rle_encode(mask), "noise": rle_encode(np.zeros((SIZE, SIZE)))}


@pytest.mark.parametrize(
    "hints",
    [[[10**20, 0]], [[-1, 4]], [[4, SIZE]], [[4, 4]] * 1001],
    ids=["huge", "negative", "outside", "too-many"],
)
def test_assist_hints_off_the_image_are_a_400(
    api, lead_a, annotator_a, reader2_a, series_a, site_a, monkeypatch, hints
):
    from annotation import tasks

    sent = []
    monkeypatch.setattr(
        tasks.slice_assist_task, "apply_async", lambda *a, **k: sent.append(k) or _Result()
    )
    create(api, lead_a, site_a, blinded=False)
    assignment, instance = _first_slice(api, annotator_a)
    path = f"/api/assignments/{assignment}/instances/{instance}/assist/"
    response = api.as_(annotator_a).post(path, {"hints": hints}, format="json")
    assert response.status_code == 400
    assert sent == []  # refused before a gpu worker was asked
    ok = api.as_(annotator_a).post(path, {"hints": [[5, 5]]}, format="json")
    assert ok.status_code == 200 and set(ok.json()["masks"]) == {"motion"}


def _queries(api, persona, path: str) -> int:
    api.as_(persona).get(path)  # the first request of a token also records its use
    with CaptureQueriesContext(connection) as captured:
        response = api.as_(persona).get(path)
    assert response.status_code == 200, response.content
    return len(captured)


def test_the_campaign_list_does_not_query_once_per_campaign(
    api, lead_a, annotator_a, reader2_a, series_a, site_a
):
    create(api, lead_a, site_a)
    one_lead = _queries(api, lead_a, "/api/campaigns/")
    one_reader = _queries(api, annotator_a, "/api/campaigns/")
    for _ in range(3):
        create(api, lead_a, site_a)
    assert _queries(api, lead_a, "/api/campaigns/") == one_lead
    assert _queries(api, annotator_a, "/api/campaigns/") == one_reader


def test_the_fine_tune_list_does_not_query_once_per_run(api, lead_a, site_a, series_a):
    from annotation.models import Campaign, FineTune, TrainingSet
    from backend.scoring.models import ModelVersion

    campaign = Campaign.objects.create(site=site_a, name="c", created_by=lead_a.user)
    ts = TrainingSet.objects.create(
        campaign=campaign, site=site_a, version=1, path="/x", sha256="0" * 64,
        created_by=lead_a.user,
    )  # fmt: skip

    def run(n: int) -> None:
        base = ModelVersion.objects.create(
            name="b", version=f"b{n}", sha256=f"{n:064d}", weights_key="w"
        )
        cand = ModelVersion.objects.create(
            name="c", version=f"c{n}", sha256=f"{n + 100:064d}", weights_key="w"
        )
        FineTune.objects.create(
            training_set=ts, site=site_a, base_model=base, candidate=cand,
            requested_by=lead_a.user,
        )  # fmt: skip

    run(1)
    path = f"/api/campaigns/{campaign.pk}/finetunes/"
    one = _queries(api, lead_a, path)
    run(2)
    run(3)
    assert _queries(api, lead_a, path) == one


def test_reader_names_in_the_agreement_csv_cannot_start_a_formula(api, lead_a, site_a, series_a):
    minus = _persona("-2+3", site_a, "annotator")
    at = _persona("@reader", site_a, "annotator")
    campaign = create(
        api, lead_a, site_a, series_ids=[str(series_a[0].pk)],
        reader_ids=[minus.user.pk, at.user.pk],
    )  # fmt: skip
    instance = str(series_a[0].instances.order_by("instance_number").first().pk)
    for persona in (minus, at):
        assignment = Assignment.objects.get(reader=persona.user)
        response = api.as_(persona).post(
            f"/api/assignments/{assignment.pk}/instances/{instance}/annotation/",
            {"masks": {"motion": square(0, 4, 0, 4)}, "diagnostic": True},
            format="json",
        )
        assert response.status_code == 201, response.content
    body = api.as_(lead_a).get(f"/api/campaigns/{campaign}/agreement.csv").content.decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    names = {row[k] for row in rows for k in ("reader_a", "reader_b")}
    assert {"'-2+3", "'@reader"} <= names
    assert not [n for n in names if n[:1] in ("=", "+", "-", "@", "\t", "\r")]


def test_a_fine_tune_redelivered_while_it_runs_leaves_the_running_one_alone(
    lead_a, site_a, settings, monkeypatch
):
    """Celery redelivers a task that outlives the broker's visibility timeout (an hour on Redis)
    while the first delivery still runs: the second must not wipe its directory and train again
    beside it."""
    from django.db import connections

    from annotation import training
    from annotation.models import Campaign, FineTune, JobStatus, TrainingSet
    from backend.jobs.services import JobBusy

    campaign = Campaign.objects.create(site=site_a, name="c", created_by=lead_a.user)
    ts = TrainingSet.objects.create(
        campaign=campaign, site=site_a, version=1, path="/x", sha256="0" * 64,
        created_by=lead_a.user,
    )  # fmt: skip
    job = FineTune.objects.create(
        training_set=ts, site=site_a, requested_by=lead_a.user, status=JobStatus.RUNNING,
        progress=0.4, message="epoch 2",
    )  # fmt: skip
    out = settings.VAR_DIR / "finetune" / str(job.pk)
    out.mkdir(parents=True)
    (out / "runner.log").write_text("the first delivery's log")

    def no_training(*args, **kwargs):
        raise AssertionError("a second training process was started")

    monkeypatch.setattr(training.subprocess, "Popen", no_training)
    monkeypatch.setattr("backend.scoring.services.model_version_deployed", lambda: None)
    first = connections.create_connection("default")  # the worker running the first delivery
    try:
        with first.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [training.run_lock_key(job.pk)])
        # Busy, not done: the task asks to run again later (finetune_task retries on JobBusy).
        with pytest.raises(JobBusy):
            training.finetune_run(finetune_id=job.pk)
    finally:
        first.close()
    assert (out / "runner.log").read_text() == "the first delivery's log"
    job.refresh_from_db()
    assert (job.status, job.progress, job.message) == (JobStatus.RUNNING, 0.4, "epoch 2")


@pytest.mark.parametrize(
    "form",
    [
        {"action": "finetune"},
        {"action": "finetune", "training_set": "not-a-uuid"},
        {"action": "promote"},
    ],
)
def test_the_campaign_page_answers_a_form_without_its_object_with_a_404(
    client, lead_a, annotator_a, reader2_a, series_a, site_a, form
):
    client.force_login(lead_a.user)
    client.post(
        "/campaigns/",
        {
            "name": "Ghosts", "site_id": site_a.pk, "artifact_types": ["motion"],
            "readers_per_image": "2", "series_ids": str(series_a[0].pk),
        },
    )  # fmt: skip
    from annotation.models import Campaign

    campaign = Campaign.objects.get(name="Ghosts")
    response = client.post(f"/campaigns/{campaign.pk}/", form)
    assert response.status_code == 404


def test_skipping_finishing_and_lead_lists_of_series_are_audited(
    api, lead_a, annotator_a, reader2_a, series_a, site_a
):
    from backend.audit.models import AuditEvent

    campaign = create(api, lead_a, site_a, series_ids=[str(series_a[0].pk)])
    a1 = Assignment.objects.get(reader=annotator_a.user)
    a2 = Assignment.objects.get(reader=reader2_a.user)
    study_uid = series_a[0].study.study_uid
    instance = str(series_a[0].instances.order_by("instance_number").first().pk)
    for persona, assignment, mask in ((annotator_a, a1, (0, 4)), (reader2_a, a2, (20, 24))):
        api.as_(persona).post(
            f"/api/assignments/{assignment.pk}/instances/{instance}/annotation/",
            {"masks": {"motion": square(*mask, *mask)}},
            format="json",
        )

    def audited(persona, action):
        return AuditEvent.objects.filter(
            user_id=persona.user.pk, action=action, study_uid=study_uid, outcome="success"
        ).count()

    before = audited(annotator_a, "annotate")
    assert api.as_(annotator_a).post(f"/api/assignments/{a1.pk}/finish/").status_code == 200
    assert audited(annotator_a, "annotate") == before + 1
    before = audited(reader2_a, "annotate")
    skip = api.as_(reader2_a).post(
        f"/api/assignments/{a2.pk}/skip/", {"reason": "motion"}, format="json"
    )
    assert skip.status_code == 200 and audited(reader2_a, "annotate") == before + 1

    # the lead's lists that name the site's series leave one row per study
    Assignment.objects.filter(pk=a2.pk).update(status="done")
    found = api.as_(lead_a).get(f"/api/campaigns/{campaign}/disagreements/")
    assert found.status_code == 200 and found.json()
    assert audited(lead_a, "list") == 1
    _model_scored(series_a[1])
    suggested = api.as_(lead_a).get(f"/api/campaigns/{campaign}/suggestions/")
    assert [s["series_id"] for s in suggested.json()] == [str(series_a[1].pk)]
    assert AuditEvent.objects.filter(
        user_id=lead_a.user.pk, action="list", study_uid=series_a[1].study.study_uid
    ).exists()


def _model_scored(series) -> None:
    from backend.scoring.models import InstanceScore, ModelVersion, ScoringRun
    from backend.studies.models import Series

    version = ModelVersion.objects.create(name="m", version="1", sha256="e" * 64, weights_key="x")
    run = ScoringRun.objects.create(
        series=series, site_id=series.site_id, model_version=version, status="done"
    )
    for instance in series.instances.all():
        InstanceScore.objects.create(
            run=run, instance=instance, suitability=0.5, nondiagnostic=False
        )
    Series.objects.filter(pk=series.pk).update(current_run=run)


def test_a_mask_with_more_runs_than_pixels_is_a_400(
    api, lead_a, annotator_a, reader2_a, series_a, site_a
):
    create(api, lead_a, site_a)
    assignment, instance = _first_slice(api, annotator_a)
    padded = [0] * 200_000 + [SIZE * SIZE]  # sums right, but no mask needs more than H*W+1 runs
    response = api.as_(annotator_a).post(
        f"/api/assignments/{assignment}/instances/{instance}/annotation/",
        {"masks": {"motion": padded}},
        format="json",
    )
    assert response.status_code == 400


def test_the_readers_queue_is_an_audited_list_in_a_fixed_number_of_queries(
    api, lead_a, annotator_a, reader2_a, site_a
):
    from backend.audit.models import AuditEvent

    series = [ingest_series(site_a, n, slices=1) for n in (1, 2, 3)]
    create(api, lead_a, site_a, series_ids=[str(series[0].pk)])
    one = _queries(api, annotator_a, "/api/annotate/queue/")
    create(api, lead_a, site_a, series_ids=[str(s.pk) for s in series[1:]])
    assert _queries(api, annotator_a, "/api/annotate/queue/") == one
    listed = set(
        AuditEvent.objects.filter(user_id=annotator_a.user.pk, action="list").values_list(
            "study_uid", flat=True
        )
    )
    assert {s.study.study_uid for s in series} <= listed
