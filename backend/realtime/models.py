"""Tables of the embedded channel layer (``backend.realtime.layers``); unused with Redis."""

from __future__ import annotations

from django.db import models


class LayerMessage(models.Model):  # noqa: DJ008
    channel = models.CharField(max_length=200, db_index=True)
    payload = models.JSONField()
    expires_at = models.DateTimeField(db_index=True)


class LayerGroupMember(models.Model):  # noqa: DJ008
    group = models.CharField(max_length=200, db_index=True)
    channel = models.CharField(max_length=200)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "channel"], name="layer_group_member_once")
        ]
