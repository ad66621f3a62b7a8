"""``/ws/events/``: live events of the caller's sites.

A browser is authenticated by its session cookie. A workstation without a session sends
``{"type": "auth", "token": "<bearer token>"}`` as its first message (tokens stay out of URLs,
where proxies log them). Until then it receives nothing; a bad token closes with 4401.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from backend.accounts.selectors import site_ids_for, token_get_active
from backend.realtime.services import site_group
from backend.scoring.selectors import blinded_series_ids

AUTH_TIMEOUT_S = 10.0
CLOSE_UNAUTHENTICATED = 4401
RESULT_EVENTS = frozenset({"instance.scored", "series.scored", "series.roi"})
"""Events that carry the model's results: not sent for a series the user reads blind."""
BLINDED_REFRESH_S = 10.0
"""How long a connection trusts its list of the user's blinded series before asking again."""


class EventsConsumer(AsyncJsonWebsocketConsumer):
    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        self.user: Any = None
        self._blinded: set[str] = set()
        self._blinded_at = float("-inf")
        await self.accept()
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            await self._subscribe(user)
        else:
            self._auth_timer = asyncio.get_running_loop().call_later(
                AUTH_TIMEOUT_S, lambda: asyncio.ensure_future(self.close(CLOSE_UNAUTHENTICATED))
            )

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self.groups_joined or not isinstance(content, dict) or content.get("type") != "auth":
            return
        token = await database_sync_to_async(token_get_active)(raw_key=str(content.get("token")))
        if token is None:
            await self.close(CLOSE_UNAUTHENTICATED)
            return
        self._auth_timer.cancel()
        user = await database_sync_to_async(lambda: token.user)()
        await self._subscribe(user)

    async def _subscribe(self, user: Any) -> None:
        self.user = user
        site_ids = await database_sync_to_async(site_ids_for)(user)
        for site_id in sorted(site_ids):
            group = site_group(site_id)
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
        await self.send_json({"kind": "subscribed", "site_ids": sorted(site_ids)})

    async def disconnect(self, code: int) -> None:
        timer = getattr(self, "_auth_timer", None)
        if timer is not None:
            timer.cancel()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def artiscan_event(self, message: dict[str, Any]) -> None:
        event = message["event"]
        if event.get("kind") in RESULT_EVENTS:
            series_id = str((event.get("data") or {}).get("series_id", ""))
            if series_id in await self._blinded_series():
                return  # a blinded reading stays blind, live events included
        await self.send_json(event)

    async def _blinded_series(self) -> set[str]:
        now = time.monotonic()
        if now - self._blinded_at > BLINDED_REFRESH_S:
            self._blinded = await database_sync_to_async(blinded_series_ids)(user=self.user)
            self._blinded_at = now
        return self._blinded
