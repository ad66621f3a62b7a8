"""Publishing events to the browsers and workstations of one site."""

from __future__ import annotations

import json
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
    async_to_sync(layer.group_send)(site_group(site_id), {"type": "artiscan.event", "event": event})
