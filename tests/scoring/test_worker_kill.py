"""kill -9 a scoring worker in the middle of a series: another worker finishes it, and every
instance ends with exactly one result for the model version (security checklist C-02/C-03)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.ingest.services import series_ingest
from backend.jobs.models import JobRecord
from backend.scoring.models import InstanceScore
from backend.studies.models import Series
from tests.conftest import ROOT, _server_env
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "backend.config", "worker", "-Q", "gpu",
             "-c", "1", "--without-gossip", "--without-mingle", "--loglevel", "INFO",
             "-n", f"kill-{time.monotonic_ns()}@%h"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def other_workers_paused(celery_worker_process):
    """The suite's shared worker also consumes the gpu queue: pause it, so the tasks of this test
    go to the workers this test starts and kills."""
    celery_worker_process.send_signal(signal.SIGSTOP)
    for child in _children(celery_worker_process.pid):
        os.kill(child, signal.SIGSTOP)
    # A paused worker may still have a BRPOP pending in Redis: a message pushed before it times
    # out (kombu's brpop_timeout, 1 s) would be handed to the paused process and sit in its
    # socket. Let it expire before the test queues anything.
    time.sleep(2.5)
    try:
        yield
    finally:
        from backend.config.celery import app

        app.control.purge()  # leftovers of this test must not reach the resumed worker
        for child in _children(celery_worker_process.pid):
            os.kill(child, signal.SIGCONT)
        celery_worker_process.send_signal(signal.SIGCONT)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _series_and_worker_env(site):
    """A 24-slice series of ``site`` (ingest queues its scoring) and the environment of worker
    processes whose unacknowledged tasks come back after 15 s."""
    from django.conf import settings

    series_ingest(
        site=site,
        files=[to_bytes(mr_dataset(i, rows=256, columns=256)) for i in range(1, 25)],
        source="upload",
    )
    env = _server_env(settings.DATABASES["default"]["NAME"])
    env["ARTISCAN_VISIBILITY_TIMEOUT"] = "15"
    return Series.objects.get(site=site), env


def test_a_worker_killed_mid_series_loses_and_duplicates_nothing(
    site_a, tmp_path, redis_clean, other_workers_paused
):
    series, env = _series_and_worker_env(site_a)  # redelivery after a whole-worker kill
    log = tmp_path / "workers.log"
    first = _worker(env, log)
    try:
        # Ingest queued one scoring task per slice; the first one takes the whole batch.
        running = JobRecord.objects.filter(subject=str(series.pk), state="running")
        assert _wait(running.exists, 120), log.read_text()[-3000:]
        killed_task = running.get().task_id
        os.killpg(first.pid, signal.SIGKILL)  # the whole worker: main process and child
        first.wait(timeout=10)
        assert InstanceScore.objects.count() == 0  # killed before its transaction committed
        second = _worker(env, log)
        try:
            assert _wait(lambda: InstanceScore.objects.count() == 24, 120), log.read_text()[-3000:]
            time.sleep(2)
            assert InstanceScore.objects.count() == 24
            assert InstanceScore.objects.values("instance").distinct().count() == 24
            record = JobRecord.objects.get(task_id=killed_task)
            assert _wait(lambda: JobRecord.objects.get(task_id=killed_task).state == "done", 60)
            record.refresh_from_db()
            assert record.attempts == 2  # redelivered after the kill, counted by us
        finally:
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)


def test_a_worker_stopped_by_a_deploy_finishes_its_task_and_loses_nothing(
    site_a, tmp_path, redis_clean, other_workers_paused
):
    """SIGTERM (a deploy's stop, security checklist C-07) is Celery's warm shutdown: the task in
    flight runs to its end and is acknowledged, the worker exits, and a worker started after it
    finds nothing to redo — every slice scored once, the job run once."""
    series, env = _series_and_worker_env(site_a)  # a lost acknowledgement shows in the test
    log = tmp_path / "workers.log"
    first = _worker(env, log)
    try:
        running = JobRecord.objects.filter(subject=str(series.pk), state="running")
        assert _wait(running.exists, 120), log.read_text()[-3000:]
        task = running.values_list("task_id", flat=True).first()
        # Still in flight when the stop comes (its scores commit together, at its end).
        assert task is not None and InstanceScore.objects.count() == 0
        first.send_signal(signal.SIGTERM)  # the main process, as a service manager stops it
        first.wait(timeout=120)
        assert "warm shutdown" in log.read_text().lower()
        assert InstanceScore.objects.count() == 24, "the task in flight ran to its end"
        record = JobRecord.objects.get(task_id=task)
        assert (record.state, record.attempts) == ("done", 1)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    second = _worker(env, log)
    try:
        assert _wait(lambda: log.read_text().count(" ready.") >= 2, 90), log.read_text()[-3000:]
        time.sleep(20)  # past the visibility timeout: an unacknowledged message would be back
        assert InstanceScore.objects.count() == 24
        assert InstanceScore.objects.values("instance").distinct().count() == 24
        assert JobRecord.objects.get(task_id=task).attempts == 1
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=30)
