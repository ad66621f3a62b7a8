"""A Channels layer on the Django database, for the embedded mode (no Redis).

The in-memory layer cannot carry an event from a Celery worker process to the ASGI server's
WebSockets; this one can, because both processes share the database. Receivers poll, which is
fine at the scale of one workstation; sites run the Redis layer instead.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer
from django.db import transaction
from django.utils import timezone


class DatabaseChannelLayer(BaseChannelLayer):
    extensions = ["groups", "flush"]

    def __init__(
        self,
        expiry: int = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        poll_interval: float = 0.05,
        **kwargs: Any,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, **kwargs)
        self.group_expiry = group_expiry
        self.poll_interval = poll_interval

    # -- channels ---------------------------------------------------------------------------
    async def new_channel(self, prefix: str = "specific") -> str:
        return f"{prefix}.db!{uuid.uuid4().hex}"

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        await database_sync_to_async(self._insert)([channel], message)

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        while True:
            message = await database_sync_to_async(self._pop)(channel)
            if message is not None:
                return dict(message)
            await asyncio.sleep(self.poll_interval)

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
        self.require_valid_group_name(group)
        await database_sync_to_async(self._group_send)(group, message)

    async def flush(self) -> None:
        from backend.realtime.models import LayerGroupMember, LayerMessage

        def _flush() -> None:
            LayerMessage.objects.all().delete()
            LayerGroupMember.objects.all().delete()

        await database_sync_to_async(_flush)()

    # -- synchronous helpers (run in a thread) ------------------------------------------------
    def _insert(self, channels: list[str], message: dict[str, Any]) -> None:
        from backend.realtime.models import LayerMessage

        expires = timezone.now() + timedelta(seconds=self.expiry)
        LayerMessage.objects.bulk_create(
            [LayerMessage(channel=c, payload=message, expires_at=expires) for c in channels]
        )

    def _pop(self, channel: str) -> dict[str, Any] | None:
        from backend.realtime.models import LayerMessage

        with transaction.atomic():
            now = timezone.now()
            LayerMessage.objects.filter(channel=channel, expires_at__lt=now).delete()
            row = LayerMessage.objects.filter(channel=channel).order_by("id").first()
            if row is None:
                return None
            deleted, _ = LayerMessage.objects.filter(pk=row.pk).delete()
            # Someone else consumed it between the read and the delete: try again next poll.
            return dict(row.payload) if deleted else None

    def _group_add(self, group: str, channel: str) -> None:
        from backend.realtime.models import LayerGroupMember

        LayerGroupMember.objects.update_or_create(
            group=group,
            channel=channel,
            defaults={"expires_at": timezone.now() + timedelta(seconds=self.group_expiry)},
        )

    def _group_send(self, group: str, message: dict[str, Any]) -> None:
        from backend.realtime.models import LayerGroupMember

        now = timezone.now()
        LayerGroupMember.objects.filter(group=group, expires_at__lt=now).delete()
        channels = list(
            LayerGroupMember.objects.filter(group=group).values_list("channel", flat=True)
        )
        if channels:
            self._insert(channels, message)
