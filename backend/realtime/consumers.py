"""``/ws/events/``: live events of the caller's sites.

A browser is authenticated by its session cookie. A workstation without a session sends
``{"type": "auth", "token": "<bearer token>"}`` as its first message (tokens stay out of URLs,
where proxies log them). Until then it receives nothing; a bad token closes with 4401.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.utils import timezone

from backend.accounts.middleware import session_expired
from backend.accounts.models import ApiToken, User
from backend.accounts.selectors import site_ids_for, token_get_active
from backend.realtime.services import site_group
from backend.scoring.selectors import blinded_series_ids

AUTH_TIMEOUT_S = 10.0
CLOSE_UNAUTHENTICATED = 4401
CLOSE_ACCESS_CHANGED = 4403
RESULT_EVENTS = frozenset({"instance.scored", "series.scored", "series.roi"})
"""Events that carry the model's results: not sent for a series the user reads blind. So is a
``review.changed`` that names a finding (a colleague accepting or rejecting what the model
found); a series verdict's is sent (the review API shows verdicts to blinded readers too)."""
RECHECK_S = 5.0
"""How long a connection trusts what it knows of its user — still allowed in (the token not
revoked or expired, the session not ended nor idle past ``ARTISCAN_SESSION_IDLE_SECONDS``,
the account active), the same sites, the series
read blind — before it asks the database again, as the next event arrives."""


@dataclass(frozen=True)
class Access:
    allowed: bool
    site_ids: frozenset[int]
    blinded: frozenset[str]


def access_now(*, user_id: int, token_id: int | None, session_key: str | None) -> Access:
    """What a connection of this user (by this token, or this browser session) may hear now."""
    user = User.objects.filter(pk=user_id, is_active=True).first()
    allowed = user is not None
    if allowed and token_id is not None:
        token = ApiToken.objects.filter(pk=token_id, revoked_at__isnull=True).first()
        allowed = token is not None and (
            token.expires_at is None or token.expires_at > timezone.now()
        )
    if allowed and session_key is not None:
        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        allowed = str(store.get(SESSION_KEY, "")) == str(user_id)
        if allowed and session_expired(store):
            # Ended here as the middleware ends it at the session's next request, so a
            # reconnect with the same cookie comes in anonymous.
            store.flush()
            allowed = False
    if not allowed or user is None:
        return Access(False, frozenset(), frozenset())
    return Access(True, frozenset(site_ids_for(user)), frozenset(blinded_series_ids(user=user)))


class EventsConsumer(AsyncJsonWebsocketConsumer):
    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        self.user: Any = None
        self._token_id: int | None = None
        self._access: Access | None = None
        self._checked_at = float("-inf")
        await self.accept()
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            session = self.scope.get("session")
            access = await database_sync_to_async(access_now)(
                user_id=user.pk, token_id=None, session_key=getattr(session, "session_key", None)
            )
            if not access.allowed:  # an idle session, ended now
                await self.close(CLOSE_UNAUTHENTICATED)
                return
            self._access, self._checked_at = access, time.monotonic()
            await self._subscribe(user, access.site_ids)
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
        self._token_id = token.pk
        user = await database_sync_to_async(lambda: token.user)()
        await self._subscribe(user)

    async def _subscribe(self, user: Any, site_ids: frozenset[int] | None = None) -> None:
        self.user = user
        if site_ids is None:
            site_ids = frozenset(await database_sync_to_async(site_ids_for)(user))
        for site_id in sorted(site_ids):
            group = site_group(site_id)
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
        self._site_ids = frozenset(site_ids)
        self._refresher = asyncio.ensure_future(self._keep_groups())
        await self.send_json({"kind": "subscribed", "site_ids": sorted(site_ids)})

    async def _keep_groups(self) -> None:
        while True:
            # A channel layer forgets a member after its group_expiry (a day by default, both
            # layers): a workstation's connection (its token lasts 90 days) went on open and
            # silent after that.
            await asyncio.sleep(float(settings.ARTISCAN_WS_GROUP_REFRESH_S))
            for group in self.groups_joined:
                await self.channel_layer.group_add(group, self.channel_name)

    async def disconnect(self, code: int) -> None:
        timer = getattr(self, "_auth_timer", None)
        if timer is not None:
            timer.cancel()
        refresher = getattr(self, "_refresher", None)
        if refresher is not None:
            refresher.cancel()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def artiscan_event(self, message: dict[str, Any]) -> None:
        access = await self._access_now()
        if not access.allowed or access.site_ids != self._site_ids:
            # The token was revoked, the session ended, the account was deactivated, or a
            # membership changed: the groups joined at connect no longer hold. The client
            # connects again (and is refused, or subscribed to what it may hear now).
            await self.close(CLOSE_ACCESS_CHANGED)
            return
        event = message["event"]
        data = event.get("data") or {}
        kind = event.get("kind")
        if kind in RESULT_EVENTS or (kind == "review.changed" and "finding_id" in data):
            series_id = str(data.get("series_id", ""))
            if series_id in access.blinded:
                return  # a blinded reading stays blind, live events included
        await self.send_json(event)

    async def _access_now(self) -> Access:
        now = time.monotonic()
        if self._access is None or now - self._checked_at > RECHECK_S:
            session = None if self._token_id is not None else self.scope.get("session")
            self._access = await database_sync_to_async(access_now)(
                user_id=self.user.pk,
                token_id=self._token_id,
                session_key=getattr(session, "session_key", None),
            )
            self._checked_at = now
        return self._access
