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


def _messages(site_id: int, events: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    messages = []
    for kind, data in events:
        event = {"kind": kind, "site_id": site_id, "data": data}
        json.dumps(event)  # fail here, in the caller, if it is not plain JSON
        messages.append({"type": "artiscan.event", "event": event})
    return messages


def _layer() -> Any:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    return layer


async def _send_all(layer: Any, group: str, messages: list[dict[str, Any]]) -> None:
    many = getattr(layer, "group_send_many", None)
    if many is not None:
        await many(group, messages)
        return
    for message in messages:
        await layer.group_send(group, message)


def events_publish(
    *,
    site_id: int,
    events: Sequence[tuple[str, dict[str, Any]]],
    loop: asyncio.AbstractEventLoop | None = None,
) -> None:
    """:func:`event_publish` for several ``(kind, data)`` events of one site, in this order, with
    one trip to the layer where it can take a batch (the database layer: one insert).

    ``loop``: an event loop the calling thread owns and keeps (not running), to run an async
    layer's send on; its connections are then made once for that loop instead of per call.
    """
    messages = _messages(site_id, events)
    if not messages:
        return
    layer = _layer()
    group = site_group(site_id)
    try:
        asyncio.get_running_loop()
        in_loop = True
    except RuntimeError:
        in_loop = False
    sync_many = getattr(layer, "group_send_many_sync", None)
    if sync_many is not None and not in_loop:
        # A layer that can send from this thread as it is (the database layer): no trip through
        # an event loop and back, and it writes with this thread's connection.
        sync_many(group, messages)
        return
    if loop is not None and not in_loop:
        loop.run_until_complete(_send_all(layer, group, messages))
        return
    send = async_to_sync(_send_all)
    if not in_loop:
        send(layer, group, messages)
        return
    # Called from sync code that runs under an event loop (async_to_sync refuses that thread).
    with ThreadPoolExecutor(1) as pool:
        pool.submit(send, layer, group, messages).result()
