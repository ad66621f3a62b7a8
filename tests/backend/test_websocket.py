"""Live events over a real ASGI server: each user hears only the sites they belong to."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from websockets.asyncio.client import connect

from backend.realtime.services import event_publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


async def _open(server: str, token: str | None = None, cookie: str | None = None):
    headers = {"Origin": f"http://{server}"}
    if cookie:
        headers["Cookie"] = cookie
    ws = await connect(f"ws://{server}/ws/events/", additional_headers=headers)
    if token:
        await ws.send(json.dumps({"type": "auth", "token": token}))
    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return ws, hello


async def _next(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def test_a_user_of_site_b_receives_no_event_about_site_a(
    asgi_server, radiologist_a, radiologist_b, site_a, site_b
):
    async def scenario():
        ws_a, hello_a = await _open(asgi_server, token=radiologist_a.token)
        ws_b, hello_b = await _open(asgi_server, token=radiologist_b.token)
        assert hello_a == {"kind": "subscribed", "site_ids": [site_a.pk]}
        assert hello_b == {"kind": "subscribed", "site_ids": [site_b.pk]}
        await asyncio.to_thread(
            event_publish, site_id=site_a.pk, kind="series.scored", data={"series_id": "x-a"}
        )
        await asyncio.to_thread(
            event_publish, site_id=site_b.pk, kind="series.scored", data={"series_id": "x-b"}
        )
        got_a = await _next(ws_a)
        got_b = await _next(ws_b)
        with pytest.raises(asyncio.TimeoutError):
            await _next(ws_b, timeout=1.5)
        await ws_a.close()
        await ws_b.close()
        return got_a, got_b

    got_a, got_b = async_to_sync(scenario)()
    assert got_a == {"kind": "series.scored", "site_id": site_a.pk, "data": {"series_id": "x-a"}}
    assert got_b["data"] == {"series_id": "x-b"}


def test_a_browser_session_is_enough_to_subscribe(asgi_server, client, radiologist_a, site_a):
    client.force_login(radiologist_a.user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"

    async def scenario():
        ws, hello = await _open(asgi_server, cookie=cookie)
        await ws.close()
        return hello

    assert async_to_sync(scenario)() == {"kind": "subscribed", "site_ids": [site_a.pk]}


def test_a_wrong_token_is_disconnected_without_events(asgi_server, radiologist_a, site_a):
    async def scenario():
        ws = await connect(
            f"ws://{asgi_server}/ws/events/", additional_headers={"Origin": f"http://{asgi_server}"}
        )
        await ws.send(json.dumps({"type": "auth", "token": "as_wrong"}))
        with pytest.raises(Exception) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        return closed.value

    error = async_to_sync(scenario)()
    assert getattr(error, "rcvd", None) is not None and error.rcvd.code == 4401


def test_a_foreign_origin_is_refused(asgi_server, radiologist_a):
    async def scenario():
        return await connect(
            f"ws://{asgi_server}/ws/events/", additional_headers={"Origin": "http://evil.example"}
        )

    with pytest.raises(Exception, match="403"):
        async_to_sync(scenario)()


def test_a_connection_idle_longer_than_the_redis_read_timeout_still_gets_events(
    asgi_server, radiologist_a, site_a
):
    """The channel layer waits for messages with a blocking Redis pop of a few seconds: a
    client socket timeout at or below that would drop every connection that stays quiet (an
    operator between two sequences)."""

    async def scenario():
        ws, _ = await _open(asgi_server, token=radiologist_a.token)
        await asyncio.sleep(12)  # idle past the channel layer's 5 s pop and Redis' 5 s default
        await asyncio.to_thread(
            event_publish, site_id=site_a.pk, kind="series.scored", data={"series_id": "late"}
        )
        got = await _next(ws, timeout=10)
        await ws.close()
        return got

    assert async_to_sync(scenario)()["data"] == {"series_id": "late"}


@pytest.mark.usefixtures("scratch_store")
def test_a_blinded_reader_hears_no_model_results_for_the_series_read_blind(
    asgi_server, annotator_a, site_a
):
    """Live events carried the model's index to a reader of an active blinded campaign."""
    from tests.annotation.conftest import ingest_series, one_reader_campaign
    from tests.conftest import _persona

    lead = _persona("lead_ws_blind", site_a, "annotation_lead")
    read = ingest_series(site_a, 5)
    one_reader_campaign(lead, site_a, annotator_a, [read], blinded=True)

    async def scenario():
        ws, _ = await _open(asgi_server, token=annotator_a.token)
        for kind, series_id, *finding in (
            ("series.scored", str(read.pk)),
            ("instance.scored", str(read.pk)),
            ("series.roi", str(read.pk)),
            ("review.changed", str(read.pk)),  # a series verdict
            ("review.changed", str(read.pk), 7),  # a colleague's review of a model finding
            ("series.scored", "another"),
        ):
            data = {"series_id": series_id, **({"finding_id": finding[0]} if finding else {})}
            await asyncio.to_thread(event_publish, site_id=site_a.pk, kind=kind, data=data)
        got = []
        while True:
            try:
                got.append(await _next(ws, timeout=2.0))
            except TimeoutError:
                break
        await ws.close()
        # The ingest's own "instance.received" news may arrive while this connects.
        return [g for g in got if g["kind"] != "instance.received"]

    got = async_to_sync(scenario)()
    assert [(g["kind"], g["data"]["series_id"], g["data"].get("finding_id")) for g in got] == [
        ("review.changed", str(read.pk), None),
        ("series.scored", "another", None),
    ]


@pytest.mark.parametrize(
    "withdrawn", ["token revoked", "account deactivated", "membership removed"]
)
def test_a_connection_hears_nothing_once_its_access_is_withdrawn(
    asgi_server, radiologist_a, site_a, withdrawn
):
    """Groups were joined once at connect: a revoked token, a deactivated account or a removed
    membership left the socket hearing the site's events. Within RECHECK_S the connection
    finds out at the next event and is closed instead (4403)."""
    from django.utils import timezone
    from websockets.exceptions import ConnectionClosed

    from backend.accounts.models import ApiToken, Membership
    from backend.realtime.consumers import CLOSE_ACCESS_CHANGED, RECHECK_S

    async def scenario():
        ws, _ = await _open(asgi_server, token=radiologist_a.token)
        await asyncio.to_thread(
            event_publish, site_id=site_a.pk, kind="series.scored", data={"series_id": "before"}
        )
        first = await _next(ws)

        def withdraw():
            if withdrawn == "token revoked":
                ApiToken.objects.filter(user=radiologist_a.user).update(revoked_at=timezone.now())
            elif withdrawn == "account deactivated":
                type(radiologist_a.user).objects.filter(pk=radiologist_a.user.pk).update(
                    is_active=False
                )
            else:
                Membership.objects.filter(user=radiologist_a.user).delete()

        await asyncio.to_thread(withdraw)
        await asyncio.sleep(RECHECK_S + 0.5)
        await asyncio.to_thread(
            event_publish, site_id=site_a.pk, kind="series.scored", data={"series_id": "after"}
        )
        with pytest.raises(ConnectionClosed) as closed:
            await _next(ws)
        return first, closed.value.rcvd.code if closed.value.rcvd else None

    first, code = async_to_sync(scenario)()
    assert first["data"] == {"series_id": "before"}
    assert code == CLOSE_ACCESS_CHANGED


def _age_session(session_key: str) -> None:
    """Make a browser session idle past the limit, as if its last request were long ago."""
    import time
    from importlib import import_module

    from django.conf import settings

    from backend.accounts.middleware import LAST_SEEN

    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    store[LAST_SEEN] = int(time.time()) - settings.ARTISCAN_SESSION_IDLE_SECONDS - 5
    store.save()


def _session_alive(session_key: str) -> bool:
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import SESSION_KEY

    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return store.get(SESSION_KEY) is not None


def test_an_idle_browser_session_loses_its_live_events(asgi_server, client, radiologist_a, site_a):
    """Idle logoff ended a session only at its next HTTP request; a socket of that session went
    on hearing the site. It is closed at its next check (4403) and the session ended, so the
    same cookie connects again as nobody."""
    from websockets.exceptions import ConnectionClosed

    from backend.realtime.consumers import CLOSE_ACCESS_CHANGED, RECHECK_S

    client.force_login(radiologist_a.user)
    key = client.cookies["sessionid"].value
    cookie = f"sessionid={key}"

    async def scenario():
        ws, hello = await _open(asgi_server, cookie=cookie)
        await asyncio.to_thread(
            event_publish, site_id=site_a.pk, kind="series.scored", data={"series_id": "before"}
        )
        first = await _next(ws)
        await asyncio.to_thread(_age_session, key)
        await asyncio.sleep(RECHECK_S + 0.5)
        await asyncio.to_thread(
            event_publish, site_id=site_a.pk, kind="series.scored", data={"series_id": "after"}
        )
        with pytest.raises(ConnectionClosed) as closed:
            await _next(ws)
        return hello, first, closed.value.rcvd.code if closed.value.rcvd else None

    hello, first, code = async_to_sync(scenario)()
    assert hello["kind"] == "subscribed" and first["data"] == {"series_id": "before"}
    assert code == CLOSE_ACCESS_CHANGED
    assert not _session_alive(key)


def test_an_idle_browser_session_cannot_subscribe(asgi_server, client, radiologist_a, site_a):
    from websockets.exceptions import ConnectionClosed

    from backend.realtime.consumers import CLOSE_UNAUTHENTICATED

    client.force_login(radiologist_a.user)
    key = client.cookies["sessionid"].value
    _age_session(key)

    async def scenario():
        headers = {"Origin": f"http://{asgi_server}", "Cookie": f"sessionid={key}"}
        ws = await connect(f"ws://{asgi_server}/ws/events/", additional_headers=headers)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        return closed.value.rcvd.code if closed.value.rcvd else None

    assert async_to_sync(scenario)() == CLOSE_UNAUTHENTICATED
    assert not _session_alive(key)


def test_a_connection_keeps_hearing_its_site_past_the_layers_group_expiry(
    radiologist_a, site_a, tmp_path
):
    """A workstation stays connected for days; the channel layer forgets a group member after
    its group expiry (the group's key in Redis lives that long after its last join), and the
    connection went on open and silent. Here a daphne whose layer forgets after 2 s, with the
    renewal asked for every hour — which the settings cap at a quarter of the expiry: 4 s
    later the group's key is still there, with its 2 s lifetime, and an event is heard."""
    import sys

    import redis
    from django.conf import settings

    from backend.realtime.services import site_group
    from tests.conftest import _free_port, _listening_process, _server_env

    env = _server_env(settings.DATABASES["default"]["NAME"])
    env["ARTISCAN_CHANNEL_GROUP_EXPIRY_S"] = "2"
    env["ARTISCAN_WS_GROUP_REFRESH_S"] = "3600"
    from tests.conftest import requires_servers

    requires_servers()  # Redis: the layer whose group keys are looked at here
    layer = settings.CHANNEL_LAYERS["default"]
    key = f"{layer['CONFIG']['prefix']}:group:{site_group(site_a.pk)}"
    client = redis.Redis.from_url(settings.REDIS_URL)
    port = _free_port()
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
               "backend.config.asgi:application"]  # fmt: skip
    with _listening_process(command, env=env, port=port, log=tmp_path / "d.log", what="daphne"):
        server = f"127.0.0.1:{port}"

        async def scenario():
            ws, hello = await _open(server, token=radiologist_a.token)
            assert hello["kind"] == "subscribed"
            assert 0 < client.ttl(key) <= 2  # the layer's own expiry, as configured
            await asyncio.sleep(4)
            assert client.exists(key)  # renewed meanwhile (it lives 2 s from a join)
            await asyncio.to_thread(
                event_publish, site_id=site_a.pk, kind="series.scored", data={"series_id": "x"}
            )
            try:
                return await _next(ws, timeout=5)
            finally:
                await ws.close()

        got = async_to_sync(scenario)()
    assert got["data"] == {"series_id": "x"}
