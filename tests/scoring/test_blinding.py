"""A reader in an active blinded annotation campaign does not get the model's results for that
series through the scoring API either (not only on the annotation pages); after the campaign is
closed, or for a series they do not read blind, they do."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.models import CampaignStatus
from backend.scoring.services import series_score
from tests.annotation.conftest import ingest_series, one_reader_campaign
from tests.conftest import _persona

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scratch_store")]


@pytest.mark.parametrize("blinded", [True, False])
def test_a_blinded_reader_gets_no_model_results_for_the_series(
    api, site_a, annotator_a, radiologist_a, blinded
):
    lead = _persona("lead_blind_a", site_a, "annotation_lead")
    read = ingest_series(site_a, 1, noisy=True)
    other = ingest_series(site_a, 2)
    for series in (read, other):
        series_score(series_id=series.pk)
    campaign = one_reader_campaign(lead, site_a, annotator_a, [read], blinded=blinded)
    response = api.as_(annotator_a).get(f"/api/series/{read.pk}/result/")
    assert response.status_code == (403 if blinded else 200)
    if blinded:
        assert "blinded" in response.json()["detail"]
        # Not a denied attempt: the viewer asks for the result whenever the reader opens one
        # of their series, and that must not add up to an access alert.
        from backend.audit.models import AuditEvent

        assert not AuditEvent.objects.filter(outcome="denied").exists()
    # api.as_ switches the one client's credentials. The same reader still sees series they do
    # not read, and colleagues see everything.
    assert api.as_(annotator_a).get(f"/api/series/{other.pk}/result/").status_code == 200
    body = api.as_(radiologist_a).get(f"/api/series/{read.pk}/result/").json()
    masks = [f["mask_url"] for i in body["instances"] for f in i["findings"] if f["mask_url"]]
    assert masks, "the shipped model marks something on these slices"
    assert api.as_(annotator_a).get(masks[0]).status_code == (403 if blinded else 200)
    campaign.status = CampaignStatus.CLOSED
    campaign.save(update_fields=["status"])
    assert api.as_(annotator_a).get(f"/api/series/{read.pk}/result/").status_code == 200
    assert api.as_(annotator_a).get(masks[0]).status_code == 200


def test_a_blinded_reader_gets_no_model_results_anywhere_else_either(
    api, site_a, annotator_a, radiologist_a
):
    """Not only /result/: the worklist, the series, its instances, and the model's DICOM SEG
    series through QIDO-RS (a viewer loaded the masks over the series being read) showed them."""
    from backend.scoring.seg import seg_store

    lead = _persona("lead_blind_b", site_a, "annotation_lead")
    read = ingest_series(site_a, 3, noisy=True)
    run = series_score(series_id=read.pk)
    assert seg_store(run)
    study = read.study.study_uid
    campaign = one_reader_campaign(lead, site_a, annotator_a, [read], blinded=True)

    def seen(persona):
        client = api.as_(persona)
        rows = client.get("/api/series/", {"study": str(read.study_id)}).json()["results"]
        worklist = next(r for r in rows if r["id"] == str(read.pk))
        detail = client.get(f"/api/series/{read.pk}/").json()
        instances = client.get(f"/api/series/{read.pk}/instances/").json()
        modalities = {
            s["00080060"]["Value"][0]
            for s in client.get(f"/dicomweb/studies/{study}/series").json()
        }
        segs = [
            i
            for i in client.get(f"/dicomweb/studies/{study}/instances").json()
            if i["00080016"]["Value"][0] != read.instances.first().sop_class_uid
        ]
        return (
            worklist["suitability_index"],
            worklist["dominant_artifact"],
            detail["suitability"],
            {i["suitability"] is None for i in instances},
            modalities,
            len(segs),
        )

    # The worklist's filter must not tell either: the model judged the series non-diagnostic.
    type(run).objects.filter(pk=run.pk).update(nondiagnostic=True)

    def found_nondiagnostic(persona):
        rows = api.as_(persona).get("/api/series/", {"nondiagnostic": "true"}).json()["results"]
        return str(read.pk) in {r["id"] for r in rows}

    assert found_nondiagnostic(radiologist_a) and not found_nondiagnostic(annotator_a)
    blind = seen(annotator_a)
    assert blind == (None, None, None, {True}, {"MR"}, 0)
    colleague = seen(radiologist_a)
    assert colleague[0] is not None and colleague[2] is not None
    assert colleague[3] == {False} and colleague[4] == {"MR", "SEG"} and colleague[5] == 1
    campaign.status = CampaignStatus.CLOSED
    campaign.save(update_fields=["status"])
    assert seen(annotator_a) == colleague


def test_a_blinded_reader_gets_no_finding_reviews_or_corrected_masks(
    api, site_a, annotator_a, radiologist_a
):
    """A finding's review history and its corrected masks are the model's results, reviewed
    (a correction starts from the model's mask): withheld from a blinded reader too."""
    import base64

    from backend.scoring.masks import mask_png
    from backend.scoring.models import Finding

    lead = _persona("lead_blind_c", site_a, "annotation_lead")
    read = ingest_series(site_a, 4, noisy=True)
    series_score(series_id=read.pk)
    finding = Finding.objects.filter(instance__series=read).first()
    assert finding is not None, "the shipped model marks something on these slices"
    corrected = (np.zeros((finding.instance.rows, finding.instance.columns)) + 1).astype(np.uint8)
    made = api.as_(radiologist_a).post(
        f"/api/findings/{finding.pk}/reviews/",
        {"action": "correct", "mask_png": base64.b64encode(mask_png(corrected)).decode()},
        format="json",
    )
    assert made.status_code == 201, made.content
    mask_url = made.json()["mask_url"]
    campaign = one_reader_campaign(lead, site_a, annotator_a, [read], blinded=True)
    reader = api.as_(annotator_a)
    assert reader.get(f"/api/findings/{finding.pk}/reviews/").status_code == 403
    assert reader.get(mask_url).status_code == 403
    assert reader.get(f"/api/series/{read.pk}/review/").json()["findings"] == {}
    colleague = api.as_(radiologist_a).get(f"/api/series/{read.pk}/review/").json()
    assert str(finding.pk) in colleague["findings"]
    campaign.status = CampaignStatus.CLOSED
    campaign.save(update_fields=["status"])
    reader = api.as_(annotator_a)
    assert reader.get(f"/api/findings/{finding.pk}/reviews/").status_code == 200
    assert reader.get(mask_url).status_code == 200


def test_a_second_unblinded_campaign_of_the_same_series_does_not_lift_the_blinding(
    api, site_a, annotator_a
):
    """The reader reads series S blind in one campaign and, in another that is not blinded,
    reads it too: the unblinded assignment's annotation API keeps the model's masks from them
    (and says so to the page), as the scoring API does. A lead who names themself a reader of
    a blinded campaign is blind there too; looking at a reader's assignment, they are not."""
    from annotation.models import Assignment

    lead = _persona("lead_blind_d", site_a, "annotation_lead")
    read = ingest_series(site_a, 5, noisy=True)
    series_score(series_id=read.pk)
    open_campaign = one_reader_campaign(lead, site_a, annotator_a, [read], blinded=False)
    one_reader_campaign(lead, site_a, annotator_a, [read], blinded=True, name="blind")
    unblinded = Assignment.objects.get(campaign=open_campaign, reader=annotator_a.user)
    reader = api.as_(annotator_a)
    detail = reader.get(f"/api/assignments/{unblinded.pk}/").json()
    assert detail["blinded"] is True
    base = f"/api/assignments/{unblinded.pk}/instances/{detail['instances'][0]['id']}"
    assert reader.get(f"{base}/model-masks/").status_code == 403
    assert reader.post(f"{base}/assist/", {}, format="json").status_code == 403

    # The lead reads another series blind in a campaign of their own ...
    other = ingest_series(site_a, 6, noisy=True)
    series_score(series_id=other.pk)
    own = one_reader_campaign(lead, site_a, lead, [other], blinded=True, name="lead reads")
    mine = Assignment.objects.get(campaign=own, reader=lead.user)
    as_lead = api.as_(lead)
    detail = as_lead.get(f"/api/assignments/{mine.pk}/").json()
    assert detail["blinded"] is True
    base = f"/api/assignments/{mine.pk}/instances/{detail['instances'][0]['id']}"
    assert as_lead.get(f"{base}/model-masks/").status_code == 403
    # ... and still sees the model's masks on the reader's assignment of a series they do not
    # read themselves.
    theirs = Assignment.objects.get(campaign=open_campaign, reader=annotator_a.user)
    Assignment.objects.filter(campaign__name="blind").delete()  # S is no longer read blind
    detail = as_lead.get(f"/api/assignments/{theirs.pk}/").json()
    assert detail["blinded"] is False
    base = f"/api/assignments/{theirs.pk}/instances/{detail['instances'][0]['id']}"
    assert as_lead.get(f"{base}/model-masks/").status_code == 200
