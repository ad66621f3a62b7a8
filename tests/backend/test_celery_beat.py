"""Beat outlives a broker failure. Celery's own scheduler keeps its first broker connection for
the life of the process: after one failed publish (the embedded SQLite broker locked past its
timeout, as ``locking protocol`` did in a demo) every later publish failed with "channel
disconnected" and the dashboards refresh and the unscored sweep never ran again. The failure
here is real: another connection holds the broker's file locked."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import redis
from celery import Celery
from celery.beat import ScheduleEntry

from backend.config.beat import ReconnectingScheduler
from tests.conftest import _free_port, _listening_process


def _messages(broker: Path) -> int:
    connection = sqlite3.connect(broker)
    try:
        return int(connection.execute("SELECT count(*) FROM kombu_message").fetchone()[0])
    except sqlite3.OperationalError:  # no table yet: nothing was ever published
        return 0
    finally:
        connection.close()


def test_a_publish_after_a_broker_failure_goes_out_on_a_new_connection(tmp_path):
    broker = tmp_path / "broker.sqlite3"
    app = Celery("beat-test", broker=f"sqla+sqlite:///{broker}", set_as_current=False)
    app.conf.broker_transport_options = {"connect_args": {"timeout": 0.3}}
    app.conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0}
    scheduler = ReconnectingScheduler(app=app, schedule_filename=str(tmp_path / "schedule"))
    entry = ScheduleEntry(
        name="unscored-sweep", task="backend.ingest.tasks.unscored_sweep_task",
        schedule=timedelta(seconds=60), app=app,
    )  # fmt: skip
    try:
        scheduler.apply_entry(entry, producer=scheduler.producer)
        assert _messages(broker) == 1

        lock = sqlite3.connect(broker, timeout=0.1, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # the broker unavailable: this publish fails (logged)
        try:
            scheduler.apply_entry(entry, producer=scheduler.producer)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert _messages(broker) == 1

        for sent in (2, 3):  # the broker is back: every later run goes out
            scheduler.apply_entry(entry, producer=scheduler.producer)
            assert _messages(broker) == sent
    finally:
        scheduler.close()


def test_ticks_go_on_while_the_broker_is_away_and_publish_once_it_is_back(tmp_path, monkeypatch):
    """A Redis broker of the test's own, stopped and started again. While it is away a tick
    gives up quickly and returns; Celery's own retries blocked a tick for ~47 minutes and then
    ended beat (the producer is made outside any handler of its tick). Once it is back, the
    next ticks publish."""
    from backend.config import beat

    monkeypatch.setattr(beat, "CONNECT_RETRIES", 0)  # one attempt per tick: the test stays short
    port = _free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(tmp_path)]
    app = Celery("beat-test", broker=f"redis://127.0.0.1:{port}/0", set_as_current=False)
    app.conf.task_publish_retry_policy = {"max_retries": 0}
    app.conf.beat_schedule = {
        "unscored-sweep": {"task": "backend.ingest.tasks.unscored_sweep_task", "schedule": 0.1}
    }
    redis_client = redis.Redis(port=port)
    scheduler = ReconnectingScheduler(app=app, schedule_filename=str(tmp_path / "schedule"))
    try:
        with _listening_process(
            command, env=dict(os.environ), port=port, log=tmp_path / "r1.log", what="redis"
        ):
            _tick_until(scheduler, lambda: redis_client.llen("celery") >= 1)
        for _ in range(4):  # the broker is away: every tick returns
            scheduler.tick()
            time.sleep(0.1)
        with _listening_process(
            command, env=dict(os.environ), port=port, log=tmp_path / "r2.log", what="redis"
        ):
            _tick_until(scheduler, lambda: redis_client.llen("celery") >= 2)
    finally:
        scheduler.close()


def _tick_until(scheduler: ReconnectingScheduler, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, "no publish"
        time.sleep(min(max(scheduler.tick(), 0.0), 0.2))


def test_the_product_runs_beat_with_this_scheduler():
    from backend.config.celery import app

    assert app.conf.beat_scheduler == "backend.config.beat:ReconnectingScheduler"
