"""Beat outlives a broker failure. Celery's own scheduler keeps its first broker connection for
the life of the process: after one failed publish (the embedded SQLite broker locked past its
timeout, as ``locking protocol`` did in a demo) every later publish failed with "channel
disconnected" and the dashboards refresh and the unscored sweep never ran again. The failure
here is real: another connection holds the broker's file locked."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

from celery import Celery
from celery.beat import ScheduleEntry

from backend.config.beat import ReconnectingScheduler


def _messages(broker: Path) -> int:
    connection = sqlite3.connect(broker)
    try:
        return int(connection.execute("SELECT count(*) FROM kombu_message").fetchone()[0])
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


def test_the_product_runs_beat_with_this_scheduler():
    from backend.config.celery import app

    assert app.conf.beat_scheduler == "backend.config.beat:ReconnectingScheduler"
