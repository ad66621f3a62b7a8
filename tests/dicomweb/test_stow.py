"""STOW-RS answers from what the door just recorded: each stored instance with its class, its
pseudonymous UID and a retrieve URL that resolves, the same for a duplicate, and one audit row
per study."""

from __future__ import annotations

import base64
import os

import pytest

from backend.audit.models import AuditEvent
from backend.studies.models import Instance
from tests.deid.builders import CANARIES, mr_dataset, to_bytes
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


def _stow(api, persona, *parts: bytes):
    return api.as_(persona).post("/dicomweb/studies", data=_body(*parts), content_type=CONTENT_TYPE)


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
