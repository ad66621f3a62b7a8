"""Publishing events to the browsers and workstations of one site."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
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
    events_publish(site_id=site_id, events=[(kind, data)])


def events_publish(*, site_id: int, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """:func:`event_publish` for several ``(kind, data)`` events of one site, in this order, with
    one trip to the layer where it can take a batch (the database layer: one insert)."""
    messages = []
    for kind, data in events:
        event = {"kind": kind, "site_id": site_id, "data": data}
        json.dumps(event)  # fail here, in the caller, if it is not plain JSON
        messages.append({"type": "artiscan.event", "event": event})
    if not messages:
        return
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    group = site_group(site_id)

    async def send_all() -> None:
        many = getattr(layer, "group_send_many", None)
        if many is not None:
            await many(group, messages)
            return
        for message in messages:
            await layer.group_send(group, message)

    send = async_to_sync(send_all)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        send()
        return
    # Called from sync code that runs under an event loop (async_to_sync refuses that thread).
    with ThreadPoolExecutor(1) as pool:
        pool.submit(send).result()
