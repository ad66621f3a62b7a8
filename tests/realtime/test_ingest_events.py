"""A slice sent by STOW-RS to the real ASGI server reaches the site's open WebSockets as
``instance.received`` (published by the server's dispatcher thread after the commit), and only
that site's."""

from __future__ import annotations

import asyncio
import json

import pytest
import requests
from asgiref.sync import async_to_sync
from websockets.asyncio.client import connect

from tests.deid.builders import mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]

BOUNDARY = "b0undary"


def _stow(server: str, token: str, files: list[bytes]) -> dict:
    body = (
        b"".join(
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f + b"\r\n"
            for f in files
        )
        + f"--{BOUNDARY}--\r\n".encode()
    )
    r = requests.post(
        f"http://{server}/dicomweb/studies",
        data=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_a_stored_slice_is_announced_live_to_its_site_only(
    asgi_server, operator_a, radiologist_a, radiologist_b
):
    from backend.studies.models import Instance

    async def scenario():
        headers = {"Origin": f"http://{asgi_server}"}
        sockets = []
        for persona in (radiologist_a, radiologist_b):
            ws = await connect(f"ws://{asgi_server}/ws/events/", additional_headers=headers)
            await ws.send(json.dumps({"type": "auth", "token": persona.token}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["kind"] == "subscribed"
            sockets.append(ws)
        await asyncio.to_thread(
            _stow, asgi_server, operator_a.token, [to_bytes(mr_dataset(i)) for i in (1, 2)]
        )
        got = json.loads(await asyncio.wait_for(sockets[0].recv(), 15))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sockets[1].recv(), 1.5)
        for ws in sockets:
            await ws.close()
        return got

    got = async_to_sync(scenario)()
    assert got["kind"] == "instance.received"
    ids = set(Instance.objects.values_list("pk", flat=True))
    assert got["data"]["count"] == 2 and {str(i) for i in ids} == set(got["data"]["instance_ids"])
    assert got["data"]["series_id"] == str(Instance.objects.first().series_id)
    assert got["data"]["source"] == "stow"
