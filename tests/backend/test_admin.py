"""The Django admin: the installation's superusers only (it shows every site's rows; security
checklist A-05), and what they read there is on the audit trail (L-01)."""

from __future__ import annotations

import pytest

from backend.audit.models import AuditEvent
from backend.ingest.models import DicomSender

pytestmark = pytest.mark.django_db

PAGES = [
    "/admin/",
    "/admin/ingest/dicomsender/",
    "/admin/ingest/quarantinedfile/",
    "/admin/audit/auditevent/",
    "/admin/scoring/sliceattempt/",
]


def test_a_site_admin_made_staff_still_gets_no_admin_page(client, admin_a, site_a, site_b):
    DicomSender.objects.create(site=site_b, ae_title="OTHER_SITE", host="192.0.2.9")
    admin_a.user.is_staff = True
    admin_a.user.save()
    client.force_login(admin_a.user)
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"].startswith("/admin/login/"), page
    sender = DicomSender.objects.get()
    response = client.get(f"/admin/ingest/dicomsender/{sender.pk}/change/")
    assert response.status_code == 302
    response = client.post(
        f"/admin/ingest/dicomsender/{sender.pk}/change/",
        {"site": site_a.pk, "ae_title": "STOLEN", "host": "192.0.2.1", "is_active": "on"},
    )
    assert response.status_code == 302 and DicomSender.objects.get().ae_title == "OTHER_SITE"


def test_a_superuser_has_the_admin_and_each_page_read_is_audited(client, superuser, site_a):
    sender = DicomSender.objects.create(site=site_a, ae_title="MRI_ROOM_1", host="192.0.2.7")
    client.force_login(superuser.user)
    for page in PAGES:
        assert client.get(page).status_code == 200, page
    assert client.get(f"/admin/ingest/dicomsender/{sender.pk}/change/").status_code == 200
    trail = [
        (e.username, e.roles, e.action, e.object_type, e.object_id)
        for e in AuditEvent.objects.order_by("at", "id")
    ]
    assert trail == [
        ("root", "superuser", "list", "ingest.dicomsender", ""),
        ("root", "superuser", "list", "ingest.quarantinedfile", ""),
        ("root", "superuser", "list", "audit.auditevent", ""),
        ("root", "superuser", "list", "scoring.sliceattempt", ""),
        ("root", "superuser", "view", "ingest.dicomsender", str(sender.pk)),
    ]
    # A change is in Django's admin log, not read again here; a refused page is not a read.
    client.post(
        f"/admin/ingest/dicomsender/{sender.pk}/change/",
        {"site": site_a.pk, "ae_title": "MRI_ROOM_1", "host": "192.0.2.8", "is_active": "on"},
    )
    assert DicomSender.objects.get().host == "192.0.2.8"
    assert client.get("/admin/ingest/dicomsender/00000/change/").status_code == 302
    assert AuditEvent.objects.count() == len(trail)
