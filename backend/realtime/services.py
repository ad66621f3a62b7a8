"""Publishing events to the browsers and workstations of one site."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def site_group(site_id: int) -> str:
    return f"site.{site_id}"


def event_publish(*, site_id: int, kind: str, data: dict[str, Any]) -> None:
    """Send ``{"kind", "site_id", "data"}`` to every connection of ``site_id``'s users.

    ``data`` carries opaque ids and results only (a series UUID, a suitability index), never a
    patient identifier: it travels through Redis and reaches every user of the site.
    """
    event = {"kind": kind, "site_id": site_id, "data": data}
    json.dumps(event)  # fail here, in the caller, if it is not plain JSON
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    send = async_to_sync(layer.group_send)
    message = {"type": "artiscan.event", "event": event}
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        send(site_group(site_id), message)
        return
    # Called from sync code that runs under an event loop (async_to_sync refuses that thread).
    with ThreadPoolExecutor(1) as pool:
        pool.submit(send, site_group(site_id), message).result()
