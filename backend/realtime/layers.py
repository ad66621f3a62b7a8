"""A Channels layer on the Django database, for the embedded mode (no Redis).

The in-memory layer cannot carry an event from a Celery worker process to the ASGI server's
WebSockets; this one can, because both processes share the database. Receivers poll, which is
fine at the scale of one workstation; sites run the Redis layer instead.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer
from django.db import transaction
from django.utils import timezone

SWEEP_S = 10
"""Seconds between two sweeps of expired messages (of channels nobody reads any more)."""


class DatabaseChannelLayer(BaseChannelLayer):
    extensions = ["groups", "flush"]

    def __init__(
        self,
        expiry: int = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        poll_interval: float = 0.025,
        **kwargs: Any,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, **kwargs)
        self.group_expiry = group_expiry
        # A verdict waits half of this on average before it reaches the browser.
        self.poll_interval = poll_interval
        self._received: dict[str, collections.deque[dict[str, Any]]] = {}
        self._next_sweep = timezone.now()

    # -- channels ---------------------------------------------------------------------------
    async def new_channel(self, prefix: str = "specific") -> str:
        return f"{prefix}.db!{uuid.uuid4().hex}"

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        await database_sync_to_async(self._insert)([channel], message)

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        buffered = self._received.get(channel)
        while not buffered:
            # Everything waiting is taken at once: a burst of verdicts costs one transaction.
            buffered = collections.deque(await database_sync_to_async(self._pop)(channel))
            if not buffered:
                await asyncio.sleep(self.poll_interval)
        self._received[channel] = buffered
        message = buffered.popleft()
        if not buffered:
            del self._received[channel]
        return dict(message)

    # -- groups -----------------------------------------------------------------------------
    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await database_sync_to_async(self._group_add)(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        from backend.realtime.models import LayerGroupMember

        await database_sync_to_async(
            lambda: LayerGroupMember.objects.filter(group=group, channel=channel).delete()
        )()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self.group_send_many(group, [message])

    async def group_send_many(self, group: str, messages: list[dict[str, Any]]) -> None:
        """``group_send`` of several messages, in order, with one query for the members and one
        insert (a burst of per-slice verdicts is one transaction, not one per event)."""
        self.require_valid_group_name(group)
        for message in messages:
            assert isinstance(message, dict), "message is not a dict"
        await database_sync_to_async(self._group_send)(group, messages)

    def group_send_many_sync(self, group: str, messages: list[dict[str, Any]]) -> None:
        """``group_send_many`` from sync code, with the calling thread's connection and, when it
        is in a transaction, in that transaction: no trip through an event loop, and no
        ``close_old_connections`` closing the caller's connection (``database_sync_to_async``
        does that before and after, on the caller's own thread)."""
        self.require_valid_group_name(group)
        for message in messages:
            assert isinstance(message, dict), "message is not a dict"
        self._group_send(group, messages)

    async def flush(self) -> None:
        from backend.realtime.models import LayerGroupMember, LayerMessage

        def _flush() -> None:
            LayerMessage.objects.all().delete()
            LayerGroupMember.objects.all().delete()

        await database_sync_to_async(_flush)()
        self._received.clear()

    # -- synchronous helpers (run in a thread) ------------------------------------------------
    def _insert(self, channels: list[str], message: dict[str, Any]) -> None:
        self._insert_many(channels, [message])

    def _insert_many(self, channels: list[str], messages: list[dict[str, Any]]) -> None:
        from backend.realtime.models import LayerMessage

        expires = timezone.now() + timedelta(seconds=self.expiry)
        # Ids grow in this order, and receivers read by id: each channel gets them in order.
        LayerMessage.objects.bulk_create(
            [
                LayerMessage(channel=c, payload=m, expires_at=expires)
                for m in messages
                for c in channels
            ]
        )

    def _pop(self, channel: str, limit: int = 200) -> list[dict[str, Any]]:
        """The oldest ``limit`` live messages of ``channel``, removed from the table, in order.

        An empty poll only reads: on SQLite every transaction here begins IMMEDIATE (it takes
        the write lock), and a poll that wrote each time would queue the worker's writes behind
        the browsers' polls. Expired rows are swept now and then, not at every poll.
        """
        from backend.realtime.models import LayerMessage

        now = timezone.now()
        if now >= self._next_sweep:
            self._next_sweep = now + timedelta(seconds=SWEEP_S)
            LayerMessage.objects.filter(expires_at__lt=now).delete()
        rows = list(
            LayerMessage.objects.filter(channel=channel)
            .order_by("id")
            .values_list("id", "payload", "expires_at")[:limit]
        )
        if not rows:
            return []
        with transaction.atomic():
            deleted, _ = LayerMessage.objects.filter(pk__in=[pk for pk, _, _ in rows]).delete()
        if deleted != len(rows):
            # A second receiver of this channel took some meanwhile. Channels name one
            # consumer each (``new_channel``), so this does not happen; if it did, nothing
            # is delivered twice.
            return []
        return [dict(payload) for _, payload, expires in rows if expires >= now]

    def _group_add(self, group: str, channel: str) -> None:
        from backend.realtime.models import LayerGroupMember

        LayerGroupMember.objects.update_or_create(
            group=group,
            channel=channel,
            defaults={"expires_at": timezone.now() + timedelta(seconds=self.group_expiry)},
        )

    def _group_send(self, group: str, messages: list[dict[str, Any]]) -> None:
        from backend.realtime.models import LayerGroupMember

        # Read first: a group with no live member (no page open) costs one read, not a write.
        # On SQLite every write takes the database's one write lock, and ingest's transactions
        # would queue behind these.
        now = timezone.now()
        members = list(
            LayerGroupMember.objects.filter(group=group).values_list("channel", "expires_at")
        )
        if any(expires < now for _, expires in members):
            LayerGroupMember.objects.filter(group=group, expires_at__lt=now).delete()
        channels = [channel for channel, expires in members if expires >= now]
        if channels:
            self._insert_many(channels, messages)
