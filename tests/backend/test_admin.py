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


def test_a_superuser_onboards_a_site_and_its_people_and_revokes_a_token(
    client, api, superuser, radiologist_a, site_a
):
    """Through the admin's own forms: a new site, a user with a membership there (who can
    then sign in and see the site), an account's lock lifted, and a stolen token revoked (it
    stops working at once); a token cannot be made there."""
    from django.utils import timezone

    from backend.accounts.models import ApiToken, Membership, Site, User

    client.force_login(superuser.user)
    for page in ("/admin/accounts/site/", "/admin/accounts/user/", "/admin/accounts/apitoken/"):
        assert client.get(page).status_code == 200, page
    made = client.post("/admin/accounts/site/add/", {"name": "North Clinic", "slug": "north"})
    assert made.status_code == 302, made.content[:500]
    north = Site.objects.get(slug="north")
    made = client.post(
        "/admin/accounts/user/add/",
        {"username": "dr_north", "password1": "a-long-Passw0rd!", "password2": "a-long-Passw0rd!",
         "usable_password": "true"},
    )  # fmt: skip
    assert made.status_code == 302, made.content[:800]
    user = User.objects.get(username="dr_north")
    form = {
        "username": "dr_north", "is_active": "on", "date_joined_0": "2026-11-30",
        "date_joined_1": "08:00:00",
        "memberships-TOTAL_FORMS": "1", "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0", "memberships-MAX_NUM_FORMS": "1000",
        "memberships-0-site": str(north.pk), "memberships-0-role": "radiologist",
        "memberships-0-user": str(user.pk),
    }  # fmt: skip
    changed = client.post(f"/admin/accounts/user/{user.pk}/change/", form)
    assert changed.status_code == 302, changed.content[:2000]
    assert list(Membership.objects.filter(user=user).values_list("site__slug", "role")) == [
        ("north", "radiologist")
    ]

    User.objects.filter(pk=radiologist_a.user.pk).update(
        locked_until=timezone.now() + timezone.timedelta(minutes=15), failed_logins=0
    )
    client.post(
        "/admin/accounts/user/",
        {"action": "unlock", "_selected_action": [radiologist_a.user.pk]},
    )
    assert User.objects.get(pk=radiologist_a.user.pk).locked_until is None

    assert api.as_(radiologist_a).get("/api/me/").status_code == 200
    token = ApiToken.objects.get(user=radiologist_a.user)
    client.post("/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert api.as_(radiologist_a).get("/api/me/").status_code == 401
    assert client.get("/admin/accounts/apitoken/add/").status_code == 403
    page = client.get(f"/admin/accounts/apitoken/{token.pk}/change/").content.decode()
    assert token.key_hash not in page
