"""The embedded channel layer (the database): a burst of events reaches a receiver whole and in
order, and only the receivers of the group it was sent to."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync

from backend.realtime.layers import DatabaseChannelLayer
from backend.realtime.models import LayerMessage

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_burst_sent_at_once_arrives_whole_and_in_order():
    layer = DatabaseChannelLayer(poll_interval=0.01)

    async def scenario():
        mine = await layer.new_channel()
        other = await layer.new_channel()
        await layer.group_add("site.1", mine)
        await layer.group_add("site.2", other)
        await layer.group_send_many("site.1", [{"type": "e", "n": n} for n in range(5)])
        await layer.group_send("site.1", {"type": "e", "n": 5})
        return [(await layer.receive(mine))["n"] for _ in range(6)]

    assert async_to_sync(scenario)() == [0, 1, 2, 3, 4, 5]
    # Every message taken once, and none queued for the member of the other group.
    assert LayerMessage.objects.count() == 0


def test_the_events_of_one_publish_go_out_with_one_insert(django_assert_max_num_queries, settings):
    from backend.realtime.services import events_publish

    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "backend.realtime.layers.DatabaseChannelLayer"}
    }
    layer = DatabaseChannelLayer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("site.7", channel)
    events = [("instance.scored", {"n": n}) for n in range(32)] + [("series.scored", {})]
    # One delete of expired members, one read of the members, one insert (each with BEGIN and
    # COMMIT where it writes): 7, where one publish per event took 33 times that.
    with django_assert_max_num_queries(7):
        events_publish(site_id=7, events=events)
    kinds = [async_to_sync(layer.receive)(channel)["event"]["kind"] for _ in range(33)]
    assert kinds == ["instance.scored"] * 32 + ["series.scored"]


def test_a_send_to_a_group_nobody_listens_to_only_reads_and_expired_members_are_dropped():
    from datetime import timedelta

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from backend.realtime.models import LayerGroupMember

    layer = DatabaseChannelLayer(poll_interval=0.01)
    with CaptureQueriesContext(connection) as queries:
        layer.group_send_many_sync("site.9", [{"type": "e", "n": 1}])
    # No page open: one read, no write (on SQLite a write takes the one write lock ingest needs).
    assert [q["sql"].split()[0].upper() for q in queries.captured_queries] == ["SELECT"]
    gone, live = async_to_sync(layer.new_channel)(), async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("site.9", gone)
    async_to_sync(layer.group_add)("site.9", live)
    LayerGroupMember.objects.filter(channel=gone).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    layer.group_send_many_sync("site.9", [{"type": "e", "n": 2}])
    assert async_to_sync(layer.receive)(live)["n"] == 2
    assert list(LayerGroupMember.objects.values_list("channel", flat=True)) == [live]
    assert not LayerMessage.objects.filter(channel=gone).exists()
