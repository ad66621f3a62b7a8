"""Session login for browsers, bearer tokens for the API and workstations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backend.accounts.models import ApiToken
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_a_token_is_issued_for_the_right_password_and_works(api, radiologist_a):
    response = api.as_(None).post(
        "/api/auth/token/", {"username": "rad_a", "password": PASSWORD, "name": "workstation"}
    )
    assert response.status_code == 201
    raw = response.json()["token"]
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/me/").json()["username"] == "rad_a"


def test_only_the_tokens_hash_is_stored(api, radiologist_a):
    raw = api.post("/api/auth/token/", {"username": "rad_a", "password": PASSWORD}).json()["token"]
    stored = ApiToken.objects.filter(name="api").get()
    assert raw not in {stored.key_hash, stored.key_prefix}
    assert stored.key_hash == ApiToken.hash_key(raw)


def test_a_wrong_password_gets_no_token(api, radiologist_a):
    response = api.post("/api/auth/token/", {"username": "rad_a", "password": "nope"})
    assert response.status_code == 401
    assert "token" not in response.json()


def test_a_wrong_token_gets_401(api, radiologist_a):
    api.credentials(HTTP_AUTHORIZATION="Bearer as_not-a-real-token")
    assert api.get("/api/me/").status_code == 401


def test_a_revoked_token_stops_working(api, radiologist_a):
    api.as_(radiologist_a)
    assert api.delete("/api/auth/token/current/").status_code == 204
    assert api.get("/api/me/").status_code == 401


def test_an_expired_token_stops_working(api, radiologist_a):
    ApiToken.objects.filter(user=radiologist_a.user).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert api.as_(radiologist_a).get("/api/me/").status_code == 401


def test_a_deactivated_users_token_stops_working(api, radiologist_a):
    radiologist_a.user.is_active = False
    radiologist_a.user.save()
    assert api.as_(radiologist_a).get("/api/me/").status_code == 401


def test_me_lists_the_roles_per_site(api, radiologist_a, site_a):
    body = api.as_(radiologist_a).get("/api/me/").json()
    assert body["memberships"] == [
        {"site_id": site_a.pk, "site_name": "Site A", "role": "radiologist"}
    ]


def test_the_browser_signs_in_on_the_styled_login_page(client, radiologist_a):
    page = client.get("/accounts/login/")
    assert b"ArtiScan" in page.content and b"artiscan.css" in page.content
    response = client.post("/accounts/login/", {"username": "rad_a", "password": PASSWORD})
    assert response.status_code == 302
    home = client.get("/")
    assert home.status_code == 200
    assert b"Site A" in home.content and b"Worklist" in home.content


def test_a_signed_in_browser_uses_the_api_with_its_session(client, radiologist_a, study_a):
    client.force_login(radiologist_a.user)
    assert client.get("/api/studies/").json()["count"] == 1


def test_the_openapi_schema_describes_every_endpoint(api, radiologist_a):
    response = api.as_(radiologist_a).get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ["/api/studies/", "/api/series/{series_id}/", "/api/auth/token/"]:
        assert path in paths
    assert response.json()["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_the_api_docs_page_loads_without_the_internet(client, radiologist_a):
    client.force_login(radiologist_a.user)
    page = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in page
    assert "cdn." not in page and "https://" not in page.split("<body")[0]


def test_a_lock_does_not_sign_out_a_session_already_open(api, client, radiologist_a, settings):
    """Someone types wrong passwords for rad_a until the account locks; rad_a, signed in
    already and reading, stays signed in (the lock refuses new password logins only), while a
    deactivated account's session ends at once."""
    from django.core.cache import cache
    from django.test import Client

    cache.clear()
    settings.ARTISCAN_LOGIN_MAX_FAILURES = 3
    reading = Client()
    reading.force_login(radiologist_a.user)
    assert reading.get("/api/me/").status_code == 200
    for _ in range(3):
        client.post("/accounts/login/", {"username": "rad_a", "password": "wrong"})
    user = type(radiologist_a.user).objects.get(pk=radiologist_a.user.pk)
    assert user.locked_until is not None and user.locked_until > timezone.now()
    assert reading.get("/api/me/").status_code == 200
    assert reading.get("/").status_code == 200
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    assert reading.get("/api/me/").status_code in (401, 403)


def test_wrong_passwords_lock_the_account_whichever_way_they_come(
    api, client, radiologist_a, settings
):
    """Per account, not per address (the token endpoint's throttle is per address and per
    process, and the login page had none): ARTISCAN_LOGIN_MAX_FAILURES wrong passwords through
    the login page and the token endpoint lock the account; the right password is refused
    while it is locked, and works again once the lock has passed."""
    from django.core.cache import cache

    cache.clear()  # the token endpoint's per-address throttle counts earlier tests' requests
    settings.ARTISCAN_LOGIN_MAX_FAILURES = 4
    for i in range(4):
        if i % 2:
            response = client.post("/accounts/login/", {"username": "rad_a", "password": "x"})
            assert response.status_code == 200  # the form again, with its error
        else:
            response = api.post("/api/auth/token/", {"username": "rad_a", "password": "x"})
            assert response.status_code == 401
    user = type(radiologist_a.user).objects.get(pk=radiologist_a.user.pk)
    assert user.locked_until is not None and user.locked_until > timezone.now()
    right = {"username": "rad_a", "password": PASSWORD}
    assert api.post("/api/auth/token/", right).status_code == 401
    assert client.post("/accounts/login/", right).status_code == 200  # not logged in
    assert "_auth_user_id" not in client.session
    # Attempts while locked do not extend the lock; once it has passed, the right one works.
    type(user).objects.filter(pk=user.pk).update(locked_until=timezone.now() - timedelta(seconds=1))
    assert api.post("/api/auth/token/", right).status_code == 201
    assert type(user).objects.get(pk=user.pk).failed_logins == 0


def test_a_right_password_clears_the_count(api, radiologist_a, settings):
    from django.core.cache import cache

    cache.clear()
    settings.ARTISCAN_LOGIN_MAX_FAILURES = 3
    right = {"username": "rad_a", "password": PASSWORD}
    for _ in range(2):
        for password in ("x", "y"):
            api.post("/api/auth/token/", {"username": "rad_a", "password": password})
        assert api.post("/api/auth/token/", right).status_code == 201
    user = type(radiologist_a.user).objects.get(pk=radiologist_a.user.pk)
    assert user.locked_until is None and user.failed_logins == 0


def test_an_idle_browser_session_is_ended_on_the_server(client, radiologist_a, settings):
    """Automatic logoff (checklist A-09): a session unused for ARTISCAN_SESSION_IDLE_SECONDS is
    flushed at its next request; a session in use stays."""
    import time

    from django.contrib.sessions.models import Session

    from backend.accounts.middleware import LAST_SEEN

    settings.ARTISCAN_SESSION_IDLE_SECONDS = 600
    client.force_login(radiologist_a.user)
    assert client.get("/api/me/").status_code == 200
    session = client.session
    assert session[LAST_SEEN] > time.time() - 5
    session[LAST_SEEN] = int(time.time()) - 300  # five minutes ago: still in use
    session.save()
    assert client.get("/api/me/").status_code == 200
    session = client.session
    session[LAST_SEEN] = int(time.time()) - 601
    session.save()
    key = session.session_key
    assert client.get("/api/me/").status_code == 401
    assert not Session.objects.filter(session_key=key).exists()
    assert client.get("/api/me/").status_code == 401  # the cookie no longer logs in


def test_a_page_reloading_on_events_does_not_keep_a_session_alive(client, radiologist_a, settings):
    """The worklist left open on a busy site reloads on every event: those requests (marked
    X-ArtiScan-Background) are answered but are not use, so the session still ends when
    nobody has used it for the idle limit; and it ends after ARTISCAN_SESSION_SECONDS from
    signing in whatever the use, although Django moves the cookie's expiry on every save."""
    import time

    from backend.accounts.middleware import LAST_SEEN, SIGNED_IN

    settings.ARTISCAN_SESSION_IDLE_SECONDS = 600
    settings.SESSION_COOKIE_AGE = 3600
    client.force_login(radiologist_a.user)
    assert client.get("/api/me/").status_code == 200
    session = client.session
    session[LAST_SEEN] = int(time.time()) - 500
    session.save()
    background = {"HTTP_X_ARTISCAN_BACKGROUND": "1"}
    assert client.get("/api/series/", **background).status_code == 200
    assert client.session[LAST_SEEN] <= int(time.time()) - 499  # not moved by the reload
    session = client.session
    session[LAST_SEEN] = int(time.time()) - 601
    session.save()
    assert client.get("/api/series/", **background).status_code == 401  # idle: signed out

    # In constant use, but signed in more than an hour ago: signed out all the same.
    client.force_login(radiologist_a.user)
    session = client.session
    assert session[SIGNED_IN] > time.time() - 5
    session[SIGNED_IN] = int(time.time()) - 3601
    session.save()
    assert client.get("/api/me/").status_code == 401
