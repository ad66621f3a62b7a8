"""The annotation pages render for the right people: a lead's campaign form and campaign page,
a reader's queue and annotate page; another site's lead gets a 404."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.models import Assignment, Campaign
from annotation.services import annotation_save
from tests.annotation.conftest import ingest_series

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_store")]


@pytest.fixture
def campaign(client, lead_a, annotator_a, reader2_a, site_a):
    series = [ingest_series(site_a, n) for n in (1, 2)]
    client.force_login(lead_a.user)
    response = client.post(
        "/campaigns/",
        {
            "name": "Ghosts",
            "site_id": site_a.pk,
            "artifact_types": ["ghosting", "motion"],
            "readers_per_image": "2",
            "blinded": "on",
            "instructions": "Mark ghosts.",
            "series_ids": f"{series[0].pk}\n{series[1].pk}",
        },
    )
    assert response.status_code == 302
    return Campaign.objects.get(name="Ghosts")


def test_a_lead_creates_a_campaign_from_the_form_and_sees_its_page(
    client, campaign, annotator_a, reader2_a
):
    assert campaign.artifact_types == ["motion", "ghosting"] and campaign.blinded
    assert Assignment.objects.filter(campaign=campaign).count() == 4
    for persona, mask_at in ((annotator_a, slice(0, 4)), (reader2_a, slice(20, 24))):
        assignment = Assignment.objects.filter(campaign=campaign, reader=persona.user).first()
        mask = np.zeros((32, 32), np.uint8)
        mask[mask_at, mask_at] = 1
        annotation_save(
            user=persona.user,
            assignment=assignment,
            instance_id=assignment.series.instances.first().pk,
            masks={"motion": mask},
            diagnostic=persona is annotator_a,
        )
    page = client.get(f"/campaigns/{campaign.pk}/").content.decode()
    assert "Ghosts" in page and "annotator_a" in page and "reader2_a" in page
    assert "diagnostic label, motion" in page  # the disagreement and why
    assert "agreement.png" in page and "Export a new version" in page
    assert page.count("0 of 2") == 2  # each reader: two series, none finished
    assert client.get("/campaigns/").status_code == 200


def test_readers_get_their_queue_and_the_annotate_page(
    client, campaign, annotator_a, reader2_a, lead_b
):
    client.force_login(annotator_a.user)
    queue = client.get("/annotate/").content.decode()
    assert "0 of 2 series read" in queue and 'id="resume"' in queue
    mine = Assignment.objects.filter(campaign=campaign, reader=annotator_a.user).first()
    page = client.get(f"/annotate/{mine.pk}/").content.decode()
    assert f'data-assignment-id="{mine.pk}"' in page and "app/annotate.js" in page
    assert client.get(f"/campaigns/{campaign.pk}/").status_code == 302  # readers go to their queue
    theirs = Assignment.objects.filter(campaign=campaign, reader=reader2_a.user).first()
    assert client.get(f"/annotate/{theirs.pk}/").status_code == 404
    client.force_login(lead_b.user)
    assert client.get(f"/campaigns/{campaign.pk}/").status_code == 404
    assert client.get(f"/annotate/{mine.pk}/").status_code == 404
    assert "Ghosts" not in client.get("/campaigns/").content.decode()


def test_the_campaign_page_shows_runs_with_figures_and_a_promote_button(client, campaign, lead_a):
    from annotation.models import FineTune, TrainingSet
    from backend.scoring.models import ModelVersion

    ts = TrainingSet.objects.create(
        campaign=campaign, site=campaign.site, version=1, path="/nowhere", sha256="ab" * 32,
        annotated_slices={"train": 5, "val": 1, "test": 2}, created_by=lead_a.user,
    )  # fmt: skip
    candidate = ModelVersion.objects.create(
        name="ft", version="1", sha256="cd" * 32, weights_key="x"
    )
    figures = {"frequency_weighted_iou": 0.4321, "suitability_roc_auc": 0.8765}
    FineTune.objects.create(
        training_set=ts, site=campaign.site, status="done", progress=1.0, message="done",
        metrics={"candidate": {"annotated": figures}, "deployed": {"annotated": figures}},
        candidate=candidate, requested_by=lead_a.user,
    )  # fmt: skip
    FineTune.objects.create(
        training_set=ts, site=campaign.site, status="running", progress=0.4,
        message="epoch 2 of 5", requested_by=lead_a.user,
    )  # fmt: skip
    page = client.get(f"/campaigns/{campaign.pk}/").content.decode()
    assert "5/1/2" in page and "abababababababab" in page
    assert "annotated fw-IoU 0.432, AUC 0.877" in page and 'value="promote"' in page
    assert "epoch 2 of 5" in page and 'http-equiv="refresh"' in page  # refreshes while running


def test_a_reader_refused_a_leads_page_is_a_denied_attempt_on_the_audit_trail(
    client, campaign, annotator_a, site_a
):
    """The adjudication page is a lead's: a reader of the campaign's own site gets a 403, and
    the refusal is on the audit trail against the campaign, as it is through the API."""
    from backend.audit.models import AuditEvent

    instance = Assignment.objects.filter(campaign=campaign).first().series.instances.first()
    client.force_login(annotator_a.user)
    assert client.get(f"/campaigns/{campaign.pk}/adjudicate/{instance.pk}/").status_code == 403
    (row,) = AuditEvent.objects.filter(outcome="denied", username="annotator_a")
    assert (row.site_id, row.object_type, row.object_id) == (
        site_a.pk, "campaign", str(campaign.pk),
    )  # fmt: skip
