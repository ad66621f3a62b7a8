"""The embedded defaults' writers queue for SQLite's write lock (``backend/config/sqlite``): a
transaction holds a lock file from ``BEGIN`` to ``COMMIT``/``ROLLBACK``/close, one that finds it
held waits and then goes in, and one that waits longer than the database's timeout fails as
SQLite's own lock does. Run on the embedded defaults, in a process of their own (the test
database is PostgreSQL)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.backend.embedded import run_embedded


def check_writers_queue() -> list[str]:
    """On the default (SQLite) database, migrated; returns the names of the checks that ran."""
    import fcntl
    import threading

    from django.db import OperationalError, connection, connections, transaction

    from backend.accounts.models import Site

    assert connection.vendor == "sqlite"
    lock_path = str(connection.settings_dict["NAME"]) + ".writer-lock"
    ran = []

    def held_by_someone() -> bool:
        """Whether a writer holds the lock (probed from an open file of its own)."""
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing lets go of a lock this probe took
        return False

    # A second writer (another thread, its own connection) waits for the first to commit.
    order: list[str] = []
    first_in, first_may_commit = threading.Event(), threading.Event()
    second_started = threading.Event()

    def first() -> None:
        with transaction.atomic():
            Site.objects.create(name="Writer one", slug="writer-one")
            order.append("first in")
            first_in.set()
            assert first_may_commit.wait(30)
            order.append("first commits")
        connections.close_all()

    def second() -> None:
        assert first_in.wait(30)
        second_started.set()
        with transaction.atomic():
            order.append("second in")
            Site.objects.create(name="Writer two", slug="writer-two")
        connections.close_all()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    assert second_started.wait(30)
    assert held_by_someone()
    assert order == ["first in"]  # the second cannot be in while the first holds the lock
    first_may_commit.set()
    for t in threads:
        t.join(30)
    assert order == ["first in", "first commits", "second in"]
    assert Site.objects.filter(slug__startswith="writer-").count() == 2
    assert not held_by_someone()
    ran.append("queue")

    # A rollback lets go, as a commit does.
    try:
        with transaction.atomic():
            Site.objects.create(name="Rolled back", slug="rolled-back")
            assert held_by_someone()
            raise RuntimeError("undo")
    except RuntimeError:
        pass
    assert not held_by_someone() and not Site.objects.filter(slug="rolled-back").exists()
    ran.append("rollback")

    # A writer elsewhere (another process: an open file of its own) holds the lock longer than
    # the timeout: the transaction fails as on SQLite's lock, and the connection still works.
    other = os.open(lock_path, os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX)
    options = connection.settings_dict["OPTIONS"]
    timeout, options["timeout"] = options.get("timeout"), 0.2
    try:
        with transaction.atomic():
            Site.objects.create(name="Too late", slug="too-late")
        raise AssertionError("went in while another writer held the lock")
    except OperationalError as exc:
        assert "database is locked" in str(exc)
    finally:
        options["timeout"] = timeout
        os.close(other)
    with transaction.atomic():
        Site.objects.create(name="In time", slug="in-time")
    assert not Site.objects.filter(slug="too-late").exists()
    assert Site.objects.filter(slug="in-time").exists()
    ran.append("timeout")

    # A connection closed inside a transaction lets go too (the transaction is lost).
    seen: list[bool] = []

    def close_inside() -> None:
        try:
            with transaction.atomic():
                Site.objects.create(name="Closed", slug="closed")
                seen.append(held_by_someone())
                connection.close()
                seen.append(held_by_someone())
        except Exception:  # the block ends on a connection that is gone: Django says so
            pass
        connections.close_all()

    closer = threading.Thread(target=close_inside)
    closer.start()
    closer.join(30)
    assert seen == [True, False], seen
    assert not Site.objects.filter(slug="closed").exists()
    ran.append("close")
    return ran


def test_sqlite_writers_queue_for_the_write_lock(tmp_path: Path) -> None:
    script = (
        "from tests.backend.test_sqlite_writers import check_writers_queue\n"
        "print(','.join(check_writers_queue()))\n"
    )
    out = run_embedded(tmp_path, script)
    assert out.split() == ["queue,rollback,timeout,close"]
