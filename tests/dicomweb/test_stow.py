"""STOW-RS answers from what the door just recorded: each stored instance with its class, its
pseudonymous UID and a retrieve URL that resolves, the same for a duplicate, and one audit row
per study."""

from __future__ import annotations

import pytest
from django.conf import settings
from pydicom.uid import generate_uid

from backend.audit.models import AuditEvent
from backend.deid.profile import pseudonymous_uid, site_key
from backend.dicomweb.views import PROCESSING_FAILURE
from backend.ingest.models import QuarantinedFile
from backend.ingest.services import NOT_OF_THE_STUDY
from backend.studies.models import Instance
from tests.deid.builders import CANARIES, STUDY_UID, mr_dataset, to_bytes
from tests.dicomweb.multipart import multipart_body

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scratch_store")]

BOUNDARY = "stowtest"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


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
        pseudonymous_uid(STUDY_UID, key=site_key(settings.DEID_KEY, str(operator_a.site.pk)))
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


def test_one_slice_into_a_known_series_costs_seven_statements_and_audits_the_senders_roles(
    api, site_a, site_b
):
    # The lean path of STOW-RS one instance at a time: the token, the caller's memberships (the
    # sending site and the audit's roles in one read), the series (with whether it holds the
    # slice already), the instance, its metadata, the audit row and the series count.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from backend.accounts.models import Membership, Role
    from tests.conftest import _persona

    sender = _persona("two_sites", site_a, "operator")
    Membership.objects.create(user=sender.user, site=site_b, role=Role.RADIOLOGIST)
    url = f"/dicomweb/studies?site={site_a.pk}"
    client = api.as_(sender)
    first = client.post(url, data=_body(to_bytes(mr_dataset(1))), content_type=CONTENT_TYPE)
    assert first.status_code == 200, first.content[:300]
    with CaptureQueriesContext(connection) as queries:
        second = client.post(url, data=_body(to_bytes(mr_dataset(2))), content_type=CONTENT_TYPE)
    assert second.status_code == 200, second.content[:300]
    statements = [
        " ".join(q["sql"].split()[:3])
        for q in queries.captured_queries
        if not q["sql"].startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE SAVEPOINT"))
    ]
    assert len(statements) == 7, statements
    assert [s.split()[0] for s in statements] == [
        "SELECT",
        "SELECT",
        "SELECT",
        "INSERT",
        "INSERT",
        "INSERT",
        "UPDATE",
    ]
    assert Instance.objects.filter(site=site_a).count() == 2
    audit = AuditEvent.objects.filter(action="create").order_by("id")
    assert [(a.site_id, a.roles) for a in audit] == [(site_a.pk, "operator")] * 2
    # The same slice again: found by the series query, answered as a duplicate, stored once.
    again = client.post(url, data=_body(to_bytes(mr_dataset(2))), content_type=CONTENT_TYPE)
    assert again.json()["00081199"] == second.json()["00081199"]
    assert Instance.objects.filter(site=site_a).count() == 2


def test_a_sender_of_several_sites_names_one_by_slug_or_id_and_not_one_of_another_role(
    api, site_a, site_b
):
    from backend.accounts.models import Membership, Role
    from tests.conftest import _persona

    sender = _persona("two_sites", site_a, "operator")
    Membership.objects.create(user=sender.user, site=site_b, role=Role.ANNOTATOR)
    client = api.as_(sender)
    body = _body(to_bytes(mr_dataset(1)))
    # Only one site to send to (annotators may not send), so none needs naming.
    assert client.post("/dicomweb/studies", data=body, content_type=CONTENT_TYPE).status_code == 200
    for named in (site_b.slug, str(site_b.pk)):
        refused = client.post(
            f"/dicomweb/studies?site={named}", data=body, content_type=CONTENT_TYPE
        )
        assert refused.status_code == 403
    Membership.objects.create(user=sender.user, site=site_b, role=Role.OPERATOR)
    # Two sending sites now: a request must name one.
    assert client.post("/dicomweb/studies", data=body, content_type=CONTENT_TYPE).status_code == 403
    for named in (site_b.slug, str(site_b.pk)):
        stored = client.post(
            f"/dicomweb/studies?site={named}", data=body, content_type=CONTENT_TYPE
        )
        assert stored.status_code == 200, stored.content[:200]
    assert Instance.objects.filter(site=site_b).count() == 1
    assert Instance.objects.filter(site=site_a).count() == 1
    # A "site" that is a digit to str.isdigit but not to int, or a number past any key: no such
    # site (a 403 like any other), never a 500.
    for named in ("²", "1" * 40):
        refused = client.post(
            f"/dicomweb/studies?site={named}", data=body, content_type=CONTENT_TYPE
        )
        assert refused.status_code == 403, (named, refused.status_code)


def test_the_metadata_of_a_batch_is_inserted_as_rows_not_as_text_arrays(api, operator_a):
    # Django 5.2 inserts plain rows on PostgreSQL through UNNEST of one array per column, and
    # psycopg quotes a text array in Python, a regular-expression callback per double quote of
    # each JSON text (12 % of a 50-slice STOW-RS): the metadata goes in as VALUES rows instead.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = _stow(api, operator_a, *(to_bytes(mr_dataset(i)) for i in (1, 2, 3)))
    assert response.status_code == 200
    inserts = [
        q["sql"]
        for q in queries.captured_queries
        if "INSERT INTO" in q["sql"] and "metadata" in q["sql"]
    ]
    assert len(inserts) == 1 and "UNNEST" not in inserts[0].upper()
    assert inserts[0].count('"00080016"') == 3  # three rows, each with its JSON


def test_more_parts_than_the_limit_are_turned_away_before_anything_is_kept(
    api, operator_a, settings
):
    """Security checklist M-12: thousands of tiny parts would each be refused and quarantined;
    past ``ARTISCAN_MAX_FILES_PER_REQUEST`` parts the request is answered 400 and nothing of it
    is stored or quarantined. At the limit the parts are taken (here all refused: junk)."""
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 5
    over = _stow(api, operator_a, to_bytes(mr_dataset(1)), *[b"junk"] * 5)
    assert over.status_code == 400 and "more than 5 parts" in over.json()["error"]
    assert not Instance.objects.exists() and not QuarantinedFile.objects.exists()
    at = _stow(api, operator_a, to_bytes(mr_dataset(1)), *[b"junk"] * 4)
    assert at.status_code == 202
    assert Instance.objects.count() == 1 and QuarantinedFile.objects.count() == 4


def test_a_full_store_turns_a_stow_away_with_a_retry_and_keeps_nothing(api, operator_a, settings):
    """Security checklist O-06: below ``ARTISCAN_STORE_MIN_FREE_MB`` free (here a floor larger
    than any disk) a STOW-RS is answered 503 with Retry-After before anything is written — no
    instance, no quarantined original — and /health/ says so; with room again it goes in."""
    settings.ARTISCAN_STORE_MIN_FREE_MB = 2**40
    full = _stow(api, operator_a, to_bytes(mr_dataset(1)), b"junk")
    assert full.status_code == 503 and full["Retry-After"] == "300"
    assert "store is full" in full.json()["error"]
    assert not Instance.objects.exists() and not QuarantinedFile.objects.exists()
    health = api.get("/health/")
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    settings.ARTISCAN_STORE_MIN_FREE_MB = 1
    assert _stow(api, operator_a, to_bytes(mr_dataset(1))).status_code == 200
    assert api.get("/health/").status_code == 200
