"""One model is deployed for every site: a lead of one site cannot promote or roll back the model
another site uses; a lead of every site (or the superuser) can."""

from __future__ import annotations

import pytest

from annotation import services
from tests.annotation.conftest import ingest_series

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign(site_a, lead_a, annotator_a, private_store):
    series = ingest_series(site_a, 1)
    return services.campaign_create(
        user=lead_a.user,
        site_id=site_a.pk,
        name="scope",
        artifact_types=["motion"],
        readers_per_image=1,
        blinded=False,
        reader_ids=[annotator_a.user.pk],
        series_ids=[series.pk],
    )


def test_a_lead_of_one_site_cannot_roll_back_the_model_of_every_site(api, campaign, lead_a, site_b):
    response = api.as_(lead_a).post(
        f"/api/campaigns/{campaign.pk}/rollback/", {"reason": "ours is worse"}, format="json"
    )
    assert response.status_code == 403
    assert "every site" in response.json()["detail"]


def test_a_lead_of_every_site_passes_the_check(api, campaign, lead_a, site_b):
    from backend.accounts.models import Membership, Role

    Membership.objects.create(user=lead_a.user, site=site_b, role=Role.ANNOTATION_LEAD)
    response = api.as_(lead_a).post(
        f"/api/campaigns/{campaign.pk}/rollback/", {"reason": "ours is worse"}, format="json"
    )
    # Past the authority check: with no earlier promotion there is nothing to roll back to.
    assert response.status_code != 403, response.content
