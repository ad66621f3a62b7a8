"""STOW-RS answers from what the door just recorded: each stored instance with its class, its
pseudonymous UID and a retrieve URL that resolves, the same for a duplicate, and one audit row
per study."""

from __future__ import annotations

import base64
import os

import pytest
from django.conf import settings
from pydicom.uid import generate_uid

from backend.audit.models import AuditEvent
from backend.deid.profile import pseudonymous_uid
from backend.dicomweb.views import PROCESSING_FAILURE
from backend.ingest.models import QuarantinedFile
from backend.ingest.services import NOT_OF_THE_STUDY
from backend.studies.models import Instance
from tests.deid.builders import CANARIES, STUDY_UID, mr_dataset, to_bytes
from tests.dicomweb.multipart import multipart_body

pytestmark = pytest.mark.django_db

BOUNDARY = "stowtest"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@pytest.fixture(autouse=True)
def _store(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "store"
    settings.STORAGE_KEYS = "t1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()


def _body(*parts: bytes) -> bytes:
    return multipart_body(*parts, boundary=BOUNDARY)


def _stow(api, persona, *parts: bytes, study: str | None = None):
    """STOW-RS of ``parts``; ``study``: to ``/studies/{study}`` (the sender's StudyInstanceUID)."""
    url = "/dicomweb/studies" + (f"/{study}" if study else "")
    return api.as_(persona).post(url, data=_body(*parts), content_type=CONTENT_TYPE)


def test_the_answer_names_every_stored_instance_by_its_pseudonymous_uids(api, operator_a):
    response = _stow(api, operator_a, *(to_bytes(mr_dataset(i)) for i in (1, 2)))
    assert response.status_code == 200, response.content[:300]
    items = response.json()["00081199"]["Value"]
    rows = {i.sop_uid: i for i in Instance.objects.select_related("series__study")}
    assert len(items) == 2 and set(rows) == {i["00081155"]["Value"][0] for i in items}
    for item in items:
        row = rows[item["00081155"]["Value"][0]]
        assert item["00081150"]["Value"] == [row.sop_class_uid]
        study, series = row.series.study.study_uid, row.series.series_uid
        url = item["00081190"]["Value"][0]
        assert url == (
            f"http://testserver/dicomweb/studies/{study}/series/{series}/instances/{row.sop_uid}"
        )
    assert not [c for c in CANARIES if c in response.content.decode()]


def test_a_duplicate_is_answered_like_the_first_copy_and_each_request_is_audited_once(
    api, operator_a
):
    first = _stow(api, operator_a, to_bytes(mr_dataset(1)), to_bytes(mr_dataset(2)))
    again = _stow(api, operator_a, to_bytes(mr_dataset(1)))
    assert first.status_code == again.status_code == 200
    assert again.json()["00081199"]["Value"][0] == first.json()["00081199"]["Value"][0]
    assert Instance.objects.count() == 2
    study_uid = Instance.objects.select_related("series__study").first().series.study.study_uid
    audit = list(AuditEvent.objects.filter(action="create").order_by("id"))
    assert [(a.object_type, a.study_uid, a.site_id) for a in audit] == [
        ("instance", study_uid, operator_a.site.pk)
    ] * 2
    assert {a.object_id for a in audit} <= {str(i.pk) for i in Instance.objects.all()}


def test_a_stow_to_one_study_stores_its_instances_and_refuses_those_of_another(api, operator_a):
    # POST /studies/{study} names the study by the sender's own UID (what its files carry).
    other = mr_dataset(3)
    other.StudyInstanceUID = generate_uid()
    other.SeriesInstanceUID = generate_uid()
    parts = [to_bytes(mr_dataset(1)), to_bytes(other), to_bytes(mr_dataset(2))]
    response = _stow(api, operator_a, *parts, study=STUDY_UID)
    assert response.status_code == 202, response.content[:300]
    answer = response.json()
    assert len(answer["00081199"]["Value"]) == 2
    (failed,) = answer["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [PROCESSING_FAILURE]
    assert failed["00000902"]["Value"] == [NOT_OF_THE_STUDY]
    assert Instance.objects.count() == 2  # the other study's file was not stored
    assert {i.series.study.study_uid for i in Instance.objects.select_related("series__study")} == {
        pseudonymous_uid(STUDY_UID, key=settings.DEID_KEY)
    }
    assert not QuarantinedFile.objects.exists()  # not bad input: the sender still has it


def test_a_stow_to_a_study_none_of_the_files_belong_to_is_a_conflict(api, operator_a):
    response = _stow(api, operator_a, to_bytes(mr_dataset(1)), study=generate_uid())
    assert response.status_code == 409
    assert not Instance.objects.exists()


def test_a_stow_to_one_study_is_refused_to_a_user_who_may_not_send(api, annotator_a):
    response = _stow(api, annotator_a, to_bytes(mr_dataset(1)), study=STUDY_UID)
    assert response.status_code == 403
    assert not Instance.objects.exists()
