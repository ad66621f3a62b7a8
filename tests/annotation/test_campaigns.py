"""Campaigns through the API, persona by persona: leads create and see everything of their
site, readers only their own queue, blinded readers neither the model's nor others' masks,
another site's lead nothing at all."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.models import Adjudication, Annotation, Assignment
from annotation.rle import rle_decode
from backend.audit.models import AuditEvent
from tests.annotation.conftest import SIZE, ingest_series, square

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_store")]


@pytest.fixture
def series_a(site_a):
    return [ingest_series(site_a, n) for n in (1, 2, 3, 4)]


def create(api, lead, site, **extra):
    body = {
        "site_id": site.pk,
        "name": "Motion in T2",
        "artifact_types": ["motion", "noise"],
        "readers_per_image": 2,
        "blinded": True,
        "instructions": "Mark every ghost.",
        **extra,
    }
    return api.as_(lead).post("/api/campaigns/", body, format="json")


def queue(api, persona):
    return api.as_(persona).get("/api/annotate/queue/").json()


def test_a_lead_creates_a_campaign_with_balanced_assignments(
    api, lead_a, annotator_a, reader2_a, radiologist_a, series_a
):
    response = create(
        api,
        lead_a,
        lead_a.site,
        reader_ids=[annotator_a.user.pk, reader2_a.user.pk, radiologist_a.user.pk],
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["series"] == 4 and body["artifact_types"] == ["motion", "noise"]
    loads = sorted(Assignment.objects.values_list("reader__username", flat=True))
    # 4 series x 2 readers = 8 assignments over 3 readers: 3, 3, 2
    assert len(loads) == 8
    assert sorted(loads.count(u) for u in set(loads)) == [2, 3, 3]
    for series in series_a:
        readers = Assignment.objects.filter(series=series).values_list("reader_id", flat=True)
        assert len(set(readers)) == 2  # two distinct readers per image
    assert queue(api, annotator_a)["progress"]["total"] == loads.count("annotator_a")


def test_the_query_picks_series_by_protocol_and_index(
    api, lead_a, annotator_a, reader2_a, series_a
):
    from backend.studies.models import Series

    Series.objects.filter(pk=series_a[0].pk).update(suitability=0.3)
    Series.objects.filter(pk=series_a[1].pk).update(suitability=0.9)
    response = create(api, lead_a, lead_a.site, index_below=50)
    assert response.status_code == 201
    assert response.json()["series"] == 1
    assert create(api, lead_a, lead_a.site, protocol="flair").status_code == 400
    too_many = create(api, lead_a, lead_a.site, readers_per_image=3)  # two readers at the site
    assert too_many.status_code == 400 and "readers" in str(too_many.json())


def test_readers_and_other_sites_cannot_create_or_see_campaigns(
    api, lead_a, lead_b, annotator_a, reader2_a, series_a, site_a
):
    assert create(api, annotator_a, site_a).status_code == 403
    assert create(api, lead_b, site_a).status_code == 404
    campaign_id = create(api, lead_a, site_a).json()["id"]
    assert api.as_(lead_b).get(f"/api/campaigns/{campaign_id}/").status_code == 404
    assert api.as_(lead_b).get("/api/campaigns/").json() == []
    for path in ("agreement/", "agreement.csv", "disagreements/", "suggestions/", "training-sets/"):
        assert api.as_(lead_b).get(f"/api/campaigns/{campaign_id}/{path}").status_code == 404
        assert api.as_(annotator_a).get(f"/api/campaigns/{campaign_id}/{path}").status_code == 403
    # The reader's refusals, on their own site, are denied attempts against the campaign.
    refused = AuditEvent.objects.filter(outcome="denied", username=annotator_a.user.username)
    assert refused.count() == 1 + 5
    assert set(refused.values_list("site_id", "object_type")) == {
        (site_a.pk, "site"),
        (site_a.pk, "campaign"),
    }
    rollback = api.as_(lead_b).post(
        f"/api/campaigns/{campaign_id}/rollback/", {"reason": "not theirs"}, format="json"
    )
    assert rollback.status_code == 404
    assert AuditEvent.objects.filter(outcome="denied", site_id=site_a.pk).exists()


def test_a_reader_sees_only_their_own_assignments(
    api, lead_a, annotator_a, reader2_a, series_a, site_a
):
    create(api, lead_a, site_a, readers_per_image=1)
    mine = queue(api, annotator_a)["assignments"]
    theirs = queue(api, reader2_a)["assignments"]
    assert len(mine) == len(theirs) == 2
    assert not {a["id"] for a in mine} & {a["id"] for a in theirs}
    other = theirs[0]["id"]
    assert api.as_(annotator_a).get(f"/api/assignments/{other}/").status_code == 404
    detail = api.as_(reader2_a).get(f"/api/assignments/{other}/").json()
    instance = detail["instances"][0]["id"]
    path = f"/api/assignments/{other}/instances/{instance}/annotation/"
    assert api.as_(annotator_a).get(path).status_code == 404
    assert api.as_(annotator_a).post(path, {"masks": {}}, format="json").status_code == 404
    # Nor can they close another reader's assignment, done or skipped.
    finish = api.as_(annotator_a).post(f"/api/assignments/{other}/finish/")
    skip = api.as_(annotator_a).post(
        f"/api/assignments/{other}/skip/", {"reason": "not mine"}, format="json"
    )
    assert (finish.status_code, skip.status_code) == (404, 404)
    assert Assignment.objects.get(pk=other).status == "pending"
    assert api.as_(lead_a).get(f"/api/assignments/{other}/").status_code == 200


def test_readings_are_versioned_with_labels_time_and_progress(
    api, lead_a, annotator_a, reader2_a, series_a, site_a
):
    create(api, lead_a, site_a, readers_per_image=1)
    q = queue(api, annotator_a)
    assert q["progress"] == {"finished": 0, "total": 2}
    assignment = q["next"]["id"]
    detail = api.as_(annotator_a).get(f"/api/assignments/{assignment}/").json()
    assert detail["blinded"] is True and detail["resume_instance_id"] is None
    instances = [i["id"] for i in detail["instances"]]
    path = f"/api/assignments/{assignment}/instances/{instances[0]}/annotation/"
    first = api.as_(annotator_a).post(
        path,
        {
            "masks": {"motion": square(2, 6, 2, 6)},
            "diagnostic": True,
            "confidence": 4,
            "time_spent_ms": 5300,
        },
        format="json",
    )
    assert first.status_code == 201, first.content
    assert first.json() == {"version": 1, "mask_pixels": {"motion": 16}, "status": "in_progress"}
    second = api.as_(annotator_a).post(
        path,
        {
            "masks": {"motion": square(2, 6, 2, 8), "noise": square(0, 1, 0, SIZE)},
            "diagnostic": False,
            "source": "previous",
            "time_spent_ms": 1200,
        },
        format="json",
    )
    assert second.json()["version"] == 2
    latest = api.as_(annotator_a).get(path).json()
    assert latest["version"] == 2 and latest["diagnostic"] is False
    assert latest["types_present"] == ["motion", "noise"]
    assert rle_decode(latest["masks"]["motion"], (SIZE, SIZE)).sum() == 24
    assert [v["version"] for v in latest["versions"]] == [2, 1]
    v1 = Annotation.objects.get(version=1)
    assert v1.time_spent_ms == 5300 and v1.created_by == annotator_a.user and v1.source == "empty"
    # resume where one stopped
    detail = api.as_(annotator_a).get(f"/api/assignments/{assignment}/").json()
    assert detail["resume_instance_id"] == instances[0]
    assert AuditEvent.objects.filter(action="annotate", user_id=annotator_a.user.pk).exists()
    # a mask of the wrong size or an unannotated type is refused
    bad = api.as_(annotator_a).post(path, {"masks": {"motion": [0, 10]}}, format="json")
    assert bad.status_code == 400
    bad = api.as_(annotator_a).post(path, {"masks": {"gibbs": square(0, 1, 0, 1)}}, format="json")
    assert bad.status_code == 400
    for instance in instances[1:]:
        api.as_(annotator_a).post(
            f"/api/assignments/{assignment}/instances/{instance}/annotation/",
            {"masks": {}},
            format="json",
        )
    assert queue(api, annotator_a)["progress"] == {"finished": 1, "total": 2}


def test_a_reader_skips_a_series_with_a_reason(
    api, lead_a, annotator_a, reader2_a, series_a, site_a
):
    create(api, lead_a, site_a, readers_per_image=1)
    assignment = queue(api, annotator_a)["next"]["id"]
    path = f"/api/assignments/{assignment}/skip/"
    assert api.as_(annotator_a).post(path, {"reason": ""}, format="json").status_code == 400
    assert api.as_(reader2_a).post(path, {"reason": "x"}, format="json").status_code == 404
    response = api.as_(annotator_a).post(path, {"reason": "wrong anatomy"}, format="json")
    assert response.json()["status"] == "skipped"
    q = queue(api, annotator_a)
    assert q["progress"]["finished"] == 1 and q["next"]["id"] != assignment


def _model_findings(series, types=("motion",)):
    """A scoring run with one finding per instance, as the scoring service would store."""
    from backend.scoring.masks import mask_put
    from backend.scoring.models import Finding, InstanceScore, ModelVersion, ScoringRun
    from backend.studies.models import Series

    version = ModelVersion.objects.create(
        name="m",
        version=str(series.pk)[:8],
        sha256=str(series.pk).replace("-", ""),
        weights_key="x",
    )
    run = ScoringRun.objects.create(
        series=series, site_id=series.site_id, model_version=version, status="done"
    )
    for instance in series.instances.all():
        InstanceScore.objects.create(
            run=run, instance=instance, suitability=0.4, nondiagnostic=True
        )
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[2:6, 2:6] = 1
        for t in types:
            key = f"masks/{series.site_id}/{run.pk}/{instance.sop_uid}/{t}.png"
            mask_put(key, mask)
            Finding.objects.create(
                run=run,
                instance=instance,
                site_id=series.site_id,
                artifact_type=t,
                mask_key=key,
                area_px=16,
                area_fraction=16 / SIZE**2,
                confidence=0.55,
            )
    Series.objects.filter(pk=series.pk).update(current_run=run, suitability=0.4)
    return run


def test_blinded_readers_see_neither_the_model_nor_each_other(
    api, lead_a, annotator_a, reader2_a, series_a, site_a
):
    for s in series_a:
        _model_findings(s)
    campaign = create(api, lead_a, site_a).json()["id"]
    assignment = queue(api, annotator_a)["next"]
    instance = (
        api.as_(annotator_a)
        .get(f"/api/assignments/{assignment['id']}/")
        .json()["instances"][0]["id"]
    )
    base = f"/api/assignments/{assignment['id']}/instances/{instance}"
    assert api.as_(annotator_a).get(f"{base}/model-masks/").status_code == 403
    assert api.as_(annotator_a).get(f"{base}/others/").status_code == 403
    assert api.as_(annotator_a).post(f"{base}/assist/", {}, format="json").status_code == 403
    # the other reader's reading of the same slice stays out of reach
    other = Assignment.objects.get(series_id=assignment["series_id"], reader=reader2_a.user)
    api.as_(reader2_a).post(
        f"/api/assignments/{other.pk}/instances/{instance}/annotation/",
        {"masks": {"motion": square(0, 4, 0, 4)}},
        format="json",
    )
    assert (
        api.as_(annotator_a)
        .get(f"/api/assignments/{other.pk}/instances/{instance}/annotation/")
        .status_code
        == 404
    )
    assert (
        api.as_(annotator_a)
        .get(f"/api/campaigns/{campaign}/instances/{instance}/readings/")
        .status_code
        == 403
    )
    mine = api.as_(annotator_a).get(f"{base}/annotation/").json()
    assert mine["version"] == 0 and mine["masks"] == {}
    # the lead may look at the model's masks
    assert api.as_(lead_a).get(f"{base}/model-masks/").status_code == 200


def test_unblinded_readers_start_from_the_model_mask(
    api, lead_a, annotator_a, reader2_a, series_a, site_a
):
    _model_findings(series_a[0], types=("motion", "gibbs"))
    create(api, lead_a, site_a, blinded=False, series_ids=[str(series_a[0].pk)])
    assignment = queue(api, annotator_a)["next"]["id"]
    instance = (
        api.as_(annotator_a).get(f"/api/assignments/{assignment}/").json()["instances"][0]["id"]
    )
    masks = (
        api.as_(annotator_a)
        .get(f"/api/assignments/{assignment}/instances/{instance}/model-masks/")
        .json()["masks"]
    )
    assert set(masks) == {"motion"}  # only the campaign's types
    assert rle_decode(masks["motion"], (SIZE, SIZE)).sum() == 16
    # not blinded to each other either: the other reader's reading of the slice
    other = Assignment.objects.get(series=series_a[0], reader=reader2_a.user)
    api.as_(reader2_a).post(
        f"/api/assignments/{other.pk}/instances/{instance}/annotation/",
        {"masks": {"motion": square(0, 3, 0, 3)}, "diagnostic": False},
        format="json",
    )
    others = api.as_(annotator_a).get(f"/api/assignments/{assignment}/instances/{instance}/others/")
    assert [(o["reader"], o["diagnostic"]) for o in others.json()] == [("reader2_a", False)]
    assert rle_decode(others.json()[0]["masks"]["motion"], (SIZE, SIZE)).sum() == 9


def test_disagreements_are_adjudicated_by_pick_majority_or_redraw(
    api, lead_a, annotator_a, reader2_a, series_a, site_a
):
    campaign = create(api, lead_a, site_a, series_ids=[str(series_a[0].pk)]).json()["id"]
    a1 = Assignment.objects.get(reader=annotator_a.user)
    a2 = Assignment.objects.get(reader=reader2_a.user)
    instances = [
        str(i)
        for i in series_a[0].instances.order_by("instance_number").values_list("pk", flat=True)
    ]

    def read(persona, assignment, instance, mask, diagnostic):
        r = api.as_(persona).post(
            f"/api/assignments/{assignment.pk}/instances/{instance}/annotation/",
            {"masks": {"motion": mask}, "diagnostic": diagnostic},
            format="json",
        )
        assert r.status_code == 201

    # slice 0: masks overlap 16/32 (IoU 0.5, not below 0.5) and labels agree -> agreement
    read(annotator_a, a1, instances[0], square(0, 4, 0, 8), True)
    read(reader2_a, a2, instances[0], square(0, 4, 0, 4), True)
    # slice 1: IoU 4/28 and different labels -> disagreement
    read(annotator_a, a1, instances[1], square(0, 4, 0, 4), True)
    read(reader2_a, a2, instances[1], square(2, 6, 2, 6), False)
    found = api.as_(lead_a).get(f"/api/campaigns/{campaign}/disagreements/").json()
    assert [d["instance_id"] for d in found] == [instances[1]]
    assert set(found[0]["reasons"]) == {"diagnostic label", "motion"}
    readings = (
        api.as_(lead_a).get(f"/api/campaigns/{campaign}/instances/{instances[1]}/readings/").json()
    )
    assert [r["reader"] for r in readings["readings"]] == ["annotator_a", "reader2_a"]
    assert rle_decode(readings["readings"][1]["masks"]["motion"], (SIZE, SIZE)).sum() == 16

    def post(body):
        return api.as_(lead_a).post(
            f"/api/campaigns/{campaign}/adjudications/", body, format="json"
        )

    majority = post({"instance_id": instances[1], "method": "majority"})
    assert majority.status_code == 201 and majority.json()["mask_pixels"] == {"motion": 4}
    pick = post(
        {
            "instance_id": instances[1],
            "method": "pick",
            "annotation_id": readings["readings"][1]["id"],
        }
    )
    assert pick.json() == {"version": 2, "method": "pick", "mask_pixels": {"motion": 16}}
    staple = post({"instance_id": instances[1], "method": "staple"})
    assert staple.status_code == 201 and staple.json()["version"] == 3
    redraw = post(
        {
            "instance_id": instances[1],
            "method": "redraw",
            "masks": {"motion": square(0, 2, 0, 2)},
            "diagnostic": False,
        }
    )
    assert redraw.json()["version"] == 4
    assert Adjudication.objects.get(version=4).diagnostic is False
    assert (
        api.as_(annotator_a)
        .post(
            f"/api/campaigns/{campaign}/adjudications/",
            {"instance_id": instances[1], "method": "majority"},
            format="json",
        )
        .status_code
        == 403
    )
    found = api.as_(lead_a).get(f"/api/campaigns/{campaign}/disagreements/").json()
    assert found[0]["adjudicated"] is True


def test_agreement_figures_match_the_readings(
    api, lead_a, annotator_a, reader2_a, series_a, site_a
):
    _model_findings(series_a[0])
    campaign = create(api, lead_a, site_a, series_ids=[str(series_a[0].pk)]).json()["id"]
    a1 = Assignment.objects.get(reader=annotator_a.user)
    a2 = Assignment.objects.get(reader=reader2_a.user)
    instances = [
        str(i)
        for i in series_a[0].instances.order_by("instance_number").values_list("pk", flat=True)
    ]
    plan = [  # (reader 1 mask, label), (reader 2 mask, label)
        ((square(2, 6, 2, 6), True), (square(2, 6, 2, 6), True)),  # same 16 px
        ((square(0, 4, 0, 4), False), (square(0, 4, 0, 8), True)),  # 16 of 32
        ((square(0, 1, 0, 1), False), (square(9, 10, 9, 10), False)),  # 0 of 2
    ]
    for instance, ((m1, d1), (m2, d2)) in zip(instances, plan, strict=True):
        for persona, assignment, mask, diag in ((annotator_a, a1, m1, d1), (reader2_a, a2, m2, d2)):
            api.as_(persona).post(
                f"/api/assignments/{assignment.pk}/instances/{instance}/annotation/",
                {"masks": {"motion": mask}, "diagnostic": diag},
                format="json",
            )
    rows = api.as_(lead_a).get(f"/api/campaigns/{campaign}/agreement/").json()
    pair = {(r["kind"], r["artifact_type"], r["reader_a"], r["reader_b"]): r for r in rows}
    motion = pair[("reader_pair", "motion", "annotator_a", "reader2_a")]
    # pooled: intersection 16+16+0 = 32, union 16+32+2 = 50; sizes 16+16+1 and 16+32+1
    assert motion["iou"] == pytest.approx(32 / 50) and motion["dice"] == pytest.approx(
        64 / 82, abs=1e-4
    )
    assert (
        motion["slices"] == 3 and motion["cohen_kappa"] is None
    )  # everyone marked motion everywhere
    diag = pair[("reader_pair", "diagnostic", "annotator_a", "reader2_a")]
    # labels (T,T), (F,T), (F,F): p_o = 2/3; r1 1 yes of 3, r2 2 of 3: p_e = (1*2 + 2*1)/9 = 4/9
    assert diag["cohen_kappa"] == pytest.approx((2 / 3 - 4 / 9) / (1 - 4 / 9), abs=1e-4)
    fleiss = pair[("readers", "diagnostic", "all", "")]
    # items [2 yes], [1, 1], [2 no]: P̄ = (1 + 0 + 1)/3; p = 1/2 each: P_e = 1/2 -> 1/3
    assert fleiss["fleiss_kappa"] == pytest.approx(1 / 3, abs=1e-4)
    model = pair[("reader_model", "motion", "annotator_a", "model")]
    # the model marks rows/cols 2:6 on every slice: r1 inter = 16 + 4 + 0, union = 16 + 28 + 17
    assert model["iou"] == pytest.approx(20 / 61, abs=1e-4)
    model_diag = pair[("reader_model", "diagnostic", "annotator_a", "model")]
    assert model_diag["cohen_kappa"] is not None
    csv = api.as_(lead_a).get(f"/api/campaigns/{campaign}/agreement.csv").content.decode()
    assert (
        csv.splitlines()[0]
        == "kind,artifact_type,reader_a,reader_b,slices,iou,dice,cohen_kappa,fleiss_kappa"
    )
    assert "reader_pair,motion,annotator_a,reader2_a,3,0.64," in csv
    png = api.as_(lead_a).get(f"/api/campaigns/{campaign}/agreement.png")
    assert png["Content-Type"] == "image/png" and png.content[:4] == b"\x89PNG"


def test_active_learning_ranks_uncertain_series_first(
    api, lead_a, annotator_a, reader2_a, series_a, site_a
):
    from backend.scoring.models import InstanceScore

    run = _model_findings(series_a[1])
    sure = _model_findings(series_a[2])
    InstanceScore.objects.filter(run=sure).update(suitability=0.98)
    campaign = create(api, lead_a, site_a, series_ids=[str(series_a[0].pk)]).json()["id"]
    rows = api.as_(lead_a).get(f"/api/campaigns/{campaign}/suggestions/").json()
    assert [r["series_id"] for r in rows] == [str(series_a[1].pk), str(series_a[2].pk)]
    # suitability 0.4 -> 1 - |0.8 - 1| = 0.8; confidence 0.55 -> 0.9
    assert rows[0]["uncertainty"] == pytest.approx(0.8) and rows[0][
        "mask_uncertainty"
    ] == pytest.approx(0.9)
    assert run.series_id == series_a[1].pk


def test_suggested_series_are_added_and_assigned_to_the_same_readers(
    api, lead_a, annotator_a, reader2_a, radiologist_a, series_a, site_a, site_b
):
    campaign = create(
        api, lead_a, site_a, readers_per_image=1, series_ids=[str(series_a[0].pk)],
        reader_ids=[annotator_a.user.pk, reader2_a.user.pk],
    ).json()["id"]  # fmt: skip
    path = f"/api/campaigns/{campaign}/series/"
    foreign = ingest_series(site_b, 9)
    refused = api.as_(lead_a).post(path, {"series_ids": [str(foreign.pk)]}, format="json")
    assert refused.status_code == 400
    added = api.as_(lead_a).post(
        path, {"series_ids": [str(s.pk) for s in series_a[:3]]}, format="json"
    )
    assert added.status_code == 200 and added.json()["added"] == 2 and added.json()["series"] == 3
    readers = list(
        Assignment.objects.filter(campaign_id=campaign).values_list("reader__username", flat=True)
    )
    # one series went to annotator_a; of the two added, reader2_a (fewer series) gets the first
    assert sorted(readers) == ["annotator_a", "annotator_a", "reader2_a"]
    assert "rad_a" not in readers  # the campaign's readers, not everyone at the site
    assert (
        api.as_(reader2_a)
        .post(path, {"series_ids": [str(series_a[3].pk)]}, format="json")
        .status_code
        == 403
    )


def test_another_sites_lead_gets_404_on_a_sites_training_sets_and_fine_tunings(
    api, lead_a, lead_b, site_a
):
    """A training set and a fine-tuning of site A: its lead reads the fine-tuning; site B's lead
    can neither read it, nor promote its candidate, nor fine-tune on the set (each a 404, as
    for an object that does not exist), and nothing is queued or promoted."""
    from annotation.models import Campaign, FineTune, TrainingSet
    from backend.scoring.models import ModelPromotion

    campaign = Campaign.objects.create(site=site_a, name="c", created_by=lead_a.user)
    training_set = TrainingSet.objects.create(
        campaign=campaign, site=site_a, version=1, path="/nonexistent", sha256="0" * 64,
        created_by=lead_a.user,
    )  # fmt: skip
    job = FineTune.objects.create(training_set=training_set, site=site_a, requested_by=lead_a.user)
    assert api.as_(lead_a).get(f"/api/finetunes/{job.pk}/").status_code == 200
    other = api.as_(lead_b)
    assert other.get(f"/api/finetunes/{job.pk}/").status_code == 404
    promote = other.post(f"/api/finetunes/{job.pk}/promote/", {"reason": "mine now"}, format="json")
    assert promote.status_code == 404
    tune = other.post(f"/api/training-sets/{training_set.pk}/finetune/", {}, format="json")
    assert tune.status_code == 404
    assert FineTune.objects.count() == 1 and not ModelPromotion.objects.exists()
    assert str(job.pk) not in promote.content.decode() + tune.content.decode()


@pytest.mark.django_db
def test_a_lead_closes_a_campaign_and_its_blinding_and_queue_end(
    api, client, site_a, annotator_a, radiologist_a, scratch_store
):
    """A campaign that could never be closed kept its readers blind for good. A lead closes it
    (page or API; audited): readings stop, it leaves the readers' queues, and the readers see
    the model's results again. Another role may not; a lead may open it again."""
    from django.core.exceptions import ValidationError

    from annotation.selectors import reader_queue
    from annotation.services import annotation_save
    from tests.annotation.conftest import one_reader_campaign
    from tests.conftest import _persona

    lead = _persona("lead_close_a", site_a, "annotation_lead")
    read = ingest_series(site_a, 7)
    campaign = one_reader_campaign(lead, site_a, annotator_a, [read], blinded=True)
    url = f"/api/campaigns/{campaign.pk}/"
    assert reader_queue(user=annotator_a.user).count() == 1
    assert api.as_(annotator_a).get(f"/api/series/{read.pk}/result/").status_code == 403
    refused = api.as_(radiologist_a).patch(url, {"status": "closed"}, format="json")
    assert refused.status_code in (403, 404)
    closed = api.as_(lead).patch(url, {"status": "closed"}, format="json")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert AuditEvent.objects.filter(object_type="campaign", object_id=str(campaign.pk)).exists()
    assert reader_queue(user=annotator_a.user).count() == 0
    assert api.as_(annotator_a).get(f"/api/series/{read.pk}/result/").status_code != 403
    assignment = Assignment.objects.get(campaign=campaign)
    instance = read.instances.first()
    with pytest.raises(ValidationError, match="closed"):
        annotation_save(
            user=annotator_a.user, assignment=assignment, instance_id=instance.pk,
            masks={"motion": np.zeros((instance.rows, instance.columns), np.uint8)},
        )  # fmt: skip
    # The page shows the state, and its button opens it again.
    client.force_login(lead.user)
    assert "Open it again" in client.get(f"/campaigns/{campaign.pk}/").content.decode()
    page = client.post(f"/campaigns/{campaign.pk}/", {"action": "reopen"})
    assert page.status_code == 302
    campaign.refresh_from_db()
    assert campaign.status == "active"
    assert reader_queue(user=annotator_a.user).count() == 1


def test_the_training_consensus_waits_for_every_reader_to_finish(
    lead_a, annotator_a, reader2_a, site_a
):
    """Two readers per image. One has read the whole series, the other one slice so far (an
    autosave of a reader still at work): nothing of the series is ground truth yet. Once the
    second finishes in agreement, every slice is; a reader who skips instead does not hold it
    back. A type one reader ticks as present without painting it, and the other does not, is a
    disagreement ("motion present"), left out until adjudicated."""
    from annotation.services import annotation_save, campaign_create, consensus, disagreements

    series = ingest_series(site_a, 7)
    campaign = campaign_create(
        user=lead_a.user, site_id=site_a.pk, name="consensus", artifact_types=["motion"],
        readers_per_image=2, blinded=False, reader_ids=[annotator_a.user.pk, reader2_a.user.pk],
        series_ids=[series.pk],
    )  # fmt: skip
    slices = list(series.instances.order_by("instance_number"))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[4:12, 4:12] = 1

    def read(persona, instance, **extra):
        assignment = Assignment.objects.get(
            campaign=campaign, reader=persona.user, series_id=instance.series_id
        )
        annotation_save(
            user=persona.user, assignment=assignment, instance_id=instance.pk,
            masks={"motion": mask}, diagnostic=True, **extra,
        )  # fmt: skip

    for instance in slices:
        read(annotator_a, instance)
    read(reader2_a, slices[0])
    assert consensus(campaign=campaign) == []
    read(reader2_a, slices[1], types_present=["motion"])
    read(reader2_a, slices[2])
    assert Assignment.objects.get(campaign=campaign, reader=reader2_a.user).status == "done"
    agreed = consensus(campaign=campaign)
    assert [row[0].pk for row in agreed] == [s.pk for s in slices]
    assert all(row[1]["motion"][4:12, 4:12].all() for row in agreed)

    # Slice 1 read again by both, neither painting: reader 2 ticks motion as present.
    empty = np.zeros((SIZE, SIZE), np.uint8)
    for persona, ticked in ((annotator_a, []), (reader2_a, ["motion"])):
        assignment = Assignment.objects.get(campaign=campaign, reader=persona.user)
        annotation_save(
            user=persona.user, assignment=assignment, instance_id=slices[0].pk,
            masks={"motion": empty}, types_present=ticked, diagnostic=True,
        )  # fmt: skip
    reasons = {d["instance_id"]: d["reasons"] for d in disagreements(campaign=campaign)}
    assert reasons[str(slices[0].pk)] == ["motion present"]
    assert [row[0].pk for row in consensus(campaign=campaign)] == [s.pk for s in slices[1:]]

    # A reader who skips the series does not hold the other's readings back.
    other = ingest_series(site_a, 8)
    from annotation.services import assignment_skip, campaign_add_series

    campaign_add_series(user=lead_a.user, campaign=campaign, series_ids=[other.pk])
    for instance in other.instances.all():
        read(annotator_a, instance)
    assert not any(row[0].series_id == other.pk for row in consensus(campaign=campaign))
    assignment_skip(
        user=reader2_a.user,
        assignment=Assignment.objects.get(campaign=campaign, reader=reader2_a.user, series=other),
        reason="motion everywhere: cannot tell",
    )
    assert sum(row[0].series_id == other.pk for row in consensus(campaign=campaign)) == 3


def test_a_reader_who_left_the_site_does_not_block_adding_series(
    lead_a, annotator_a, reader2_a, radiologist_a, site_a
):
    """Three readers, two per image; one's account is closed. Adding series (the
    active-learning suggestions) assigns them to the two still there, instead of refusing with
    "every reader must read at the campaign's site"; what the third read stays."""
    from annotation.services import campaign_add_series, campaign_create

    first = ingest_series(site_a, 9)
    campaign = campaign_create(
        user=lead_a.user, site_id=site_a.pk, name="pool", artifact_types=["motion"],
        readers_per_image=2, blinded=False, series_ids=[first.pk],
        reader_ids=[annotator_a.user.pk, reader2_a.user.pk, radiologist_a.user.pk],
    )  # fmt: skip
    before = set(Assignment.objects.filter(campaign=campaign).values_list("pk", flat=True))
    annotator_a.user.is_active = False
    annotator_a.user.save(update_fields=["is_active"])
    added = [ingest_series(site_a, n) for n in (10, 11)]
    assert (
        campaign_add_series(user=lead_a.user, campaign=campaign, series_ids=[s.pk for s in added])
        == 2
    )
    new = Assignment.objects.filter(campaign=campaign).exclude(pk__in=before)
    assert new.count() == 4
    assert set(new.values_list("reader__username", flat=True)) == {"reader2_a", "rad_a"}
    assert set(Assignment.objects.filter(pk__in=before).values_list("pk", flat=True)) == before


def test_a_reader_who_left_mid_series_does_not_hold_the_training_consensus_back(
    lead_a, annotator_a, reader2_a, site_a
):
    """Two readers; the second read one slice, then their account was closed. The first
    reader's finished readings are the series' ground truth; the leaver's half-done autosave
    is not part of it."""
    from annotation.services import annotation_save, campaign_create, consensus

    series = ingest_series(site_a, 12)
    campaign = campaign_create(
        user=lead_a.user, site_id=site_a.pk, name="left", artifact_types=["motion"],
        readers_per_image=2, blinded=False, reader_ids=[annotator_a.user.pk, reader2_a.user.pk],
        series_ids=[series.pk],
    )  # fmt: skip
    slices = list(series.instances.order_by("instance_number"))
    painted = np.zeros((SIZE, SIZE), np.uint8)
    painted[4:12, 4:12] = 1
    elsewhere = np.zeros((SIZE, SIZE), np.uint8)
    elsewhere[20:30, 20:30] = 1
    for persona, instances, mask in (
        (annotator_a, slices, painted), (reader2_a, slices[:1], elsewhere),
    ):  # fmt: skip
        assignment = Assignment.objects.get(campaign=campaign, reader=persona.user)
        for instance in instances:
            annotation_save(
                user=persona.user, assignment=assignment, instance_id=instance.pk,
                masks={"motion": mask}, diagnostic=True,
            )  # fmt: skip
    assert consensus(campaign=campaign) == []  # the second reader is still at it
    reader2_a.user.is_active = False
    reader2_a.user.save(update_fields=["is_active"])
    agreed = consensus(campaign=campaign)
    assert [row[0].pk for row in agreed] == [s.pk for s in slices]
    assert all(row[1]["motion"][4:12, 4:12].all() for row in agreed)
    assert not any(row[1]["motion"][20:30, 20:30].any() for row in agreed)
