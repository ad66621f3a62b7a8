"""A reader in an active blinded annotation campaign does not get the model's results for that
series through the scoring API either (not only on the annotation pages); after the campaign is
closed, or for a series they do not read blind, they do."""

from __future__ import annotations

import pytest

from annotation.models import CampaignStatus
from annotation.services import campaign_create
from backend.scoring.services import series_score
from tests.annotation.conftest import ingest_series
from tests.conftest import _persona

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scratch_store")]


@pytest.mark.parametrize("blinded", [True, False])
def test_a_blinded_reader_gets_no_model_results_for_the_series(
    api, site_a, annotator_a, radiologist_a, blinded
):
    lead = _persona("lead_blind_a", site_a, "annotation_lead")
    read = ingest_series(site_a, 1)
    other = ingest_series(site_a, 2)
    for series in (read, other):
        series_score(series_id=series.pk)
    campaign = campaign_create(
        user=lead.user,
        site_id=site_a.pk,
        name="blind read",
        artifact_types=["motion"],
        readers_per_image=1,
        blinded=blinded,
        reader_ids=[annotator_a.user.pk],
        series_ids=[read.pk],
    )
    response = api.as_(annotator_a).get(f"/api/series/{read.pk}/result/")
    assert response.status_code == (403 if blinded else 200)
    if blinded:
        assert "blinded" in response.json()["detail"]
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
