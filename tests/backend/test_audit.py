"""The audit trail: one row per access to a study, denied accesses too, and nobody edits it."""

from __future__ import annotations

import pytest
from django.db import connection

from backend.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_viewing_a_study_writes_one_audit_row(api, radiologist_a, study_a, site_a):
    api.as_(radiologist_a).get(f"/api/studies/{study_a.pk}/")
    [event] = AuditEvent.objects.all()
    assert (event.username, event.action, event.outcome) == ("rad_a", "view", "success")
    assert (event.site_id, event.study_uid, event.object_type) == (
        site_a.pk,
        study_a.study_uid,
        "study",
    )
    assert event.roles == "radiologist"
    assert event.request_id and event.source_ip == "127.0.0.1"


def test_listing_writes_one_row_per_study_shown(api, radiologist_a, study_a, site_a):
    from tests.factories import SeriesFactory, StudyFactory

    other = StudyFactory(site=site_a)
    SeriesFactory.create_batch(2, study=other)
    api.as_(radiologist_a).get("/api/series/")
    rows = AuditEvent.objects.filter(action="list")
    assert sorted(r.study_uid for r in rows) == sorted([study_a.study_uid, other.study_uid])


def test_an_empty_list_writes_no_row(api, radiologist_b, study_a):
    api.as_(radiologist_b).get("/api/studies/")
    assert AuditEvent.objects.count() == 0


def test_a_denied_access_is_logged_with_the_owning_site(api, radiologist_b, study_a, site_a):
    api.as_(radiologist_b).get(f"/api/studies/{study_a.pk}/")
    [event] = AuditEvent.objects.all()
    assert (event.outcome, event.username, event.site_id) == ("denied", "rad_b", site_a.pk)


def test_the_site_admin_reads_the_sites_trail_and_no_other(
    api, radiologist_a, radiologist_b, admin_a, admin_b, study_a
):
    api.as_(radiologist_a).get(f"/api/studies/{study_a.pk}/")
    api.as_(radiologist_b).get(f"/api/studies/{study_a.pk}/")
    mine = api.as_(admin_a).get("/api/audit-events/").json()
    assert sorted(e["outcome"] for e in mine["results"]) == ["denied", "success"]
    assert api.as_(admin_b).get("/api/audit-events/").json()["count"] == 0


def test_reading_the_trail_is_on_the_trail(api, admin_a, site_a):
    api.as_(admin_a).get("/api/audit-events/")
    again = api.as_(admin_a).get("/api/audit-events/").json()["results"]
    assert [(e["object_type"], e["object_id"], e["username"], e["action"]) for e in again] == [
        ("audit_trail", str(site_a.pk), "admin_a", "list")
    ]


def test_a_radiologist_cannot_read_the_audit_trail(api, radiologist_a, study_a):
    api.as_(radiologist_a).get(f"/api/studies/{study_a.pk}/")
    assert api.as_(radiologist_a).get("/api/audit-events/").json()["count"] == 0


def test_the_model_refuses_updates_and_deletes(api, radiologist_a, study_a):
    api.as_(radiologist_a).get(f"/api/studies/{study_a.pk}/")
    event = AuditEvent.objects.get()
    event.username = "someone else"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().update(username="x")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_raw_updates_on_postgresql(api, radiologist_a, study_a):
    if connection.vendor != "postgresql":
        pytest.fail("run through `make test` (PostgreSQL)")
    api.as_(radiologist_a).get(f"/api/studies/{study_a.pk}/")
    from django.db import DatabaseError, transaction

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("UPDATE audit_auditevent SET username = 'x'")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM audit_auditevent")
    assert AuditEvent.objects.get().username == "rad_a"


def test_the_admin_offers_no_way_to_edit_the_trail(client, superuser, api, radiologist_a, study_a):
    api.as_(radiologist_a).get(f"/api/studies/{study_a.pk}/")
    event = AuditEvent.objects.get()
    client.force_login(superuser.user)
    page = client.get(f"/admin/audit/auditevent/{event.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert (
        client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_a_forged_request_id_with_newlines_is_replaced(api, radiologist_a, study_a):
    api.as_(radiologist_a).get(
        f"/api/studies/{study_a.pk}/", HTTP_X_REQUEST_ID="abc\r\nINJECTED log line"
    )
    assert "\n" not in AuditEvent.objects.get().request_id
