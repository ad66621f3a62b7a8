"""``manage.py training_set_export``: a new immutable version from the command line, whose
checksum catches any later change on disk."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from annotation.models import Assignment, TrainingSet
from annotation.services import annotation_save, campaign_create
from annotation.training import training_set_verify
from backend.audit.models import AuditAction, AuditEvent
from tests.annotation.conftest import ingest_series

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_store")]


def training_set_split(ts: TrainingSet) -> str:
    return ", ".join(f"{s} {ts.annotated_slices[s]}" for s in ("train", "val", "test"))


def test_the_command_exports_agreed_slices_and_the_checksum_holds(lead_a, annotator_a, site_a):
    series = ingest_series(site_a, 1, slices=2)
    campaign = campaign_create(
        user=lead_a.user, site_id=site_a.pk, name="c", artifact_types=["spike"],
        readers_per_image=1, reader_ids=[annotator_a.user.pk],
    )  # fmt: skip
    assignment = Assignment.objects.get(campaign=campaign)
    mask = np.zeros((32, 32), np.uint8)
    mask[3:9, 4:10] = 1
    for instance in series.instances.all():
        annotation_save(
            user=annotator_a.user, assignment=assignment, instance_id=instance.pk,
            masks={"spike": mask}, diagnostic=False,
        )  # fmt: skip
    with pytest.raises(CommandError):
        call_command("training_set_export", str(campaign.pk), "--lead", "annotator_a", "--quiet")
    out = io.StringIO()
    call_command("training_set_export", str(campaign.pk), "--lead", "lead_a", "--quiet", stdout=out)
    ts = TrainingSet.objects.get(campaign=campaign)
    # Audited as the API's export is (checklist L-01): one row per study, by the lead.
    exported = AuditEvent.objects.filter(action=AuditAction.EXPORT)
    assert [(e.username, e.object_type, e.study_uid, e.site_id, e.outcome) for e in exported] == [
        ("lead_a", "series", series.study.study_uid, site_a.pk, "success")
    ]
    split = training_set_split(ts)
    assert f"training set v1: 2 annotated slices ({split}) + 0 simulated, sha256 {ts.sha256}" in (
        out.getvalue()
    )
    assert sum(ts.annotated_slices.values()) == 2 and training_set_verify(training_set=ts)
    root = Path(ts.path)
    manifest = json.loads((root / "annotated" / "manifest.json").read_text())
    shard = np.load(root / "annotated" / manifest["shards"][0]["path"])
    spike = ["motion", "ghosting", "aliasing", "chemical_shift", "susceptibility", "zipper",
             "spike", "gibbs", "bias_field", "noise"].index("spike")  # fmt: skip
    assert shard["masks"].shape == (2, 10, 32, 32)
    assert shard["masks"][0, spike].sum() == 36 and shard["masks"][0].sum() == 36
    assert shard["nondiagnostic"].all() and set(shard["source"]) == {"annotated"}
    assert "sop" not in json.dumps(manifest).lower()
    # tampering is detected
    victim = root / "annotated" / manifest["shards"][0]["path"]
    victim.chmod(0o644)
    victim.write_bytes(victim.read_bytes() + b"x")
    assert not training_set_verify(training_set=ts)


def test_the_campaign_pages_export_is_audited_as_the_commands_is(
    client, lead_a, annotator_a, site_a
):
    series = ingest_series(site_a, 2, slices=1)
    campaign = campaign_create(
        user=lead_a.user, site_id=site_a.pk, name="p", artifact_types=["spike"],
        readers_per_image=1, reader_ids=[annotator_a.user.pk],
    )  # fmt: skip
    assignment = Assignment.objects.get(campaign=campaign)
    mask = np.zeros((32, 32), np.uint8)
    mask[3:9, 4:10] = 1
    annotation_save(
        user=annotator_a.user, assignment=assignment, instance_id=series.instances.get().pk,
        masks={"spike": mask}, diagnostic=False,
    )  # fmt: skip
    client.force_login(lead_a.user)
    response = client.post(f"/campaigns/{campaign.pk}/", {"action": "export"})
    assert response.status_code == 302
    assert TrainingSet.objects.filter(campaign=campaign).count() == 1
    exported = AuditEvent.objects.filter(action=AuditAction.EXPORT)
    assert [(e.username, e.object_type, e.study_uid, e.site_id, e.outcome) for e in exported] == [
        ("lead_a", "series", series.study.study_uid, site_a.pk, "success")
    ]
