"""After the commit, ingest's news leaves through one thread per process: events and scoring
requests coalesced per series, and a lost scoring request is made good by the sweep."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from backend.ingest.dispatch import dispatcher, ingest_flush
from backend.ingest.services import series_ingest
from tests.deid.builders import mr_dataset, to_bytes


def published() -> int:
    return dispatcher().published


class SiteEvents:
    """A receiver in a site's group of the configured channel layer (Redis in site mode)."""

    def __init__(self, site_id: int) -> None:
        self.group = f"site.{site_id}"
        self.layer = get_channel_layer()

    def __enter__(self) -> SiteEvents:
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(self.group, self.channel)
        return self

    def __exit__(self, *_: Any) -> None:
        async_to_sync(self.layer.group_discard)(self.group, self.channel)

    def take(self, n: int, timeout: float = 20, flush: bool = True) -> list[dict[str, Any]]:
        """The next ``n`` events (fails if they do not come); ``flush`` first publishes what
        waits for a window (and ends every window)."""
        if flush:
            assert ingest_flush(timeout)

        async def receive() -> list[dict[str, Any]]:
            return [
                (await asyncio.wait_for(self.layer.receive(self.channel), timeout))["event"]
                for _ in range(n)
            ]

        return async_to_sync(receive)()


def _ingest_one(site: Any, i: int, callbacks: Any) -> Any:
    with callbacks(execute=True):
        [outcome] = series_ingest(site=site, files=[to_bytes(mr_dataset(i))], source="stow")
    assert outcome.status == "accepted"
    return outcome


@pytest.mark.django_db
def test_slices_arriving_close_together_make_one_request_and_one_event_after_the_first(
    site_a, settings, django_capture_on_commit_callbacks
):
    settings.ARTISCAN_INGEST_COALESCE_S = 30.0  # no window ends by itself in this test
    ingest_flush()
    before = published()
    with SiteEvents(site_a.pk) as events:
        first = _ingest_one(site_a, 1, django_capture_on_commit_callbacks)
        # The first slice of a quiet series goes out at once, alone, with no flush.
        [lone] = events.take(1, flush=False)
        rest = [_ingest_one(site_a, i, django_capture_on_commit_callbacks) for i in range(2, 7)]
        # The next five wait for the window (flushed here) and go out together.
        [together] = events.take(1)
    assert lone["kind"] == "instance.received"
    assert (lone["data"]["count"], lone["data"]["instance_ids"]) == (1, [first.instance_id])
    assert together["data"]["count"] == 5
    assert together["data"]["instance_ids"] == [o.instance_id for o in rest]
    assert together["data"]["instance_id"] == rest[-1].instance_id
    assert published() - before == 2


@pytest.mark.django_db
def test_the_request_held_for_the_window_goes_out_when_the_window_ends(
    site_a, settings, django_capture_on_commit_callbacks
):
    settings.ARTISCAN_INGEST_COALESCE_S = 0.3
    ingest_flush()
    before = published()
    _ingest_one(site_a, 1, django_capture_on_commit_callbacks)
    _ingest_one(site_a, 2, django_capture_on_commit_callbacks)
    # No flush: the thread sends the second on its own once the window is over.
    deadline = time.monotonic() + 30
    while published() - before < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert published() - before == 2


CHILD = """
import sys
from pathlib import Path
from backend.accounts.models import Site
from backend.ingest.dispatch import dispatcher, ingest_flush
from backend.ingest.services import series_ingest
[outcome] = series_ingest(
    site=Site.objects.get(pk=int(sys.argv[1])), files=[Path(sys.argv[2]).read_bytes()],
    source="stow",
)
assert outcome.status == "accepted", outcome
assert ingest_flush(120)
assert dispatcher().published == 0, "the broker was not dead"
print(outcome.instance_id)
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.servers
def test_a_slice_whose_scoring_request_was_lost_is_scored_after_the_sweep(
    site_a, celery_worker_process, tmp_path
):
    """The fault for real: a process whose broker is a dead port accepts and commits a slice,
    and its scoring request fails. The sweep asks again; the real worker scores it."""
    from django.conf import settings

    from backend.ingest.services import unscored_sweep
    from backend.scoring.models import InstanceScore
    from backend.studies.models import Instance
    from tests.conftest import _free_port, _server_env, _wait_for

    env = _server_env(settings.DATABASES["default"]["NAME"])
    env["CELERY_BROKER_URL"] = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    path = tmp_path / "slice.dcm"
    path.write_bytes(to_bytes(mr_dataset(3)))
    code = "import django; django.setup()\n" + CHILD
    child = subprocess.run(
        [sys.executable, "-c", code, str(site_a.pk), str(path)],
        env={**env, "DJANGO_SETTINGS_MODULE": "backend.config.settings"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    assert "not sent" in child.stderr  # the publish did fail, and said so
    instance = Instance.objects.get(pk=child.stdout.split()[-1])
    assert not InstanceScore.objects.filter(instance=instance).exists()
    # Too recent for the default age; any age at all with 0.
    assert str(instance.series_id) not in unscored_sweep(older_than_s=3600)
    assert unscored_sweep(older_than_s=0) == [str(instance.series_id)]
    _wait_for(
        lambda: InstanceScore.objects.filter(instance=instance).exists(), 180, "the sweep's score"
    )


@pytest.mark.django_db
def test_the_sweep_leaves_slices_from_before_a_promotion_and_older_than_its_window(
    settings, tmp_path, admin_a
):
    """Scoring slices again under a new model is `rescore`'s decision: the sweep asks only for
    slices that arrived while the deployed version was deployed, within its window — and for a
    slice from before the promotion that no version ever scored (its request was lost just
    before the switch: nothing else would ask for it)."""
    import datetime as dt
    import shutil

    from django.utils import timezone

    from backend.config.celery import app
    from backend.ingest.services import unscored_sweep
    from backend.scoring.models import InstanceScore, ModelPromotion, RunStatus, ScoringRun
    from backend.scoring.services import (
        model_promote,
        model_version_deployed,
        model_version_register,
    )
    from backend.studies.models import Instance
    from ml.pipeline import SHIPPED
    from tests.factories import InstanceFactory

    app.control.purge()  # an empty scoring queue, or the sweep waits
    previous = model_version_deployed()
    weights = tmp_path / "candidate.onnx"
    shutil.copy(SHIPPED["pruned-onnx"], weights)
    candidate = model_version_register(
        weights_path=weights, name="candidate", version="1", metrics={}
    )
    now = timezone.now()
    promotion = model_promote(model_version=candidate, user=admin_a.user, reason="sweep test")
    ModelPromotion.objects.filter(pk=promotion.pk).update(created_at=now - dt.timedelta(hours=2))
    before_promotion = InstanceFactory()
    lost_before_promotion = InstanceFactory()
    after_promotion = InstanceFactory()
    too_old = InstanceFactory()
    for instance, hours in (
        (before_promotion, 3), (lost_before_promotion, 3), (after_promotion, 1), (too_old, 30),
    ):  # fmt: skip
        Instance.objects.filter(pk=instance.pk).update(received_at=now - dt.timedelta(hours=hours))
    # The slice of 3 h ago was scored by the version deployed then.
    run = ScoringRun.objects.create(
        series=before_promotion.series, site=before_promotion.series.site,
        model_version=previous, status=RunStatus.DONE,
    )  # fmt: skip
    InstanceScore.objects.create(
        run=run, instance=before_promotion, suitability=0.9, nondiagnostic=False
    )
    # The candidate was promoted 2 h ago: the slice of 1 h ago is this version's to score, and
    # the one of 3 h ago that nobody scored; the one the old version scored is left.
    assert sorted(unscored_sweep(older_than_s=60)) == sorted(
        [str(after_promotion.series_id), str(lost_before_promotion.series_id)]
    )
    app.control.purge()
    # Without a promotion (the initial default) the window alone bounds it: 24 h by default.
    ModelPromotion.objects.filter(pk=promotion.pk).delete()
    ModelPromotion.objects.filter(model_version=candidate).delete()
    got = unscored_sweep(older_than_s=60)
    assert sorted(got) == sorted(
        str(i.series_id) for i in (before_promotion, lost_before_promotion, after_promotion)
    )
    app.control.purge()
    settings.ARTISCAN_SCORE_SWEEP_WINDOW_H = 48
    assert str(too_old.series_id) in unscored_sweep(older_than_s=60)
    app.control.purge()


@pytest.mark.django_db
def test_the_sweep_leaves_rows_without_a_file_such_as_the_demo_history(site_a, site_b):
    """The dashboards' synthetic history has series and slices but no files: the sweep asked
    for their scoring every minute of a demo, the scoring failed, and the series turned
    "failed" in the worklist."""
    import datetime as dt

    from django.utils import timezone

    from backend.config.celery import app
    from backend.dashboards.demo import demo_history_create
    from backend.ingest.services import unscored_sweep
    from backend.studies.models import Instance
    from tests.factories import InstanceFactory

    app.control.purge()  # an empty scoring queue, or the sweep waits
    demo_history_create(site_a=site_a, site_b=site_b, weeks=1)
    real = InstanceFactory()
    an_hour_ago = timezone.now() - dt.timedelta(hours=1)
    Instance.objects.update(received_at=an_hour_ago)
    assert Instance.objects.filter(storage_key="").count() > 10
    assert unscored_sweep(older_than_s=60) == [str(real.series_id)]
    app.control.purge()
