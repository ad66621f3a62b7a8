"""The door's files are durable before their rows commit, with one disk sync per batch shared
among concurrent batches (group commit), and a committed file is never written again.

The syncs are the real ``syncfs`` of the store's filesystem, observed; a failing sync (a disk
error, which a test cannot cause for real) is the only injected fault, and a crash between the
writes and the commit is a real child process killed at that point."""

from __future__ import annotations

import base64
import errno
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from backend.ingest.services import series_ingest
from backend.storage import store
from backend.storage.store import GroupSync, store_get
from backend.studies.models import Instance
from tests.conftest import ROOT, _server_env, requires_servers
from tests.deid.builders import mr_dataset, to_bytes

if store._SYNCFS is None:  # pragma: no cover - every Linux/glibc has it
    pytest.fail("these tests need syncfs (Linux)")

REAL_SYNCFS = store._SYNCFS


def _wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + 60
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


class Observed:
    """The real syncfs, recording when each sync starts and ends in one sequence of events;
    the first sync can be held until the test lets it go."""

    def __init__(self, *, hold_first: bool = False, fail_first: bool = False) -> None:
        self.events: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail_first = fail_first

    def record(self, what: str, who: int) -> None:
        with self.lock:
            self.events.append((what, who))

    def __call__(self, fd: int) -> int:
        with self.lock:
            self.calls += 1
            number = self.calls
        self.record("sync-start", number)
        if number == 1:
            self.entered.set()
            self.release.wait(60)
        result = -1 if (self.fail_first and number == 1) else REAL_SYNCFS(fd)
        self.record("sync-end", number)
        return int(result)


def _writers(tmp_path: Path, group: GroupSync, observed: Observed, ids: range):
    """Threads that each write a file and then sync; returns (threads, errors by id)."""
    errors: dict[int, BaseException] = {}

    def writer(i: int) -> None:
        (tmp_path / f"{i}.bin").write_bytes(os.urandom(4096))
        observed.record("written", i)
        try:
            group.sync()
        except BaseException as exc:  # reported by the test
            errors[i] = exc
        observed.record("returned", i)

    return [threading.Thread(target=writer, args=(i,)) for i in ids], errors


def test_concurrent_writers_share_one_sync_that_began_after_each_of_their_writes(tmp_path):
    observed = Observed(hold_first=True)
    group = GroupSync(tmp_path, observed)
    first, errors = _writers(tmp_path, group, observed, range(1))
    first[0].start()
    observed.entered.wait(60)  # the first sync is running, started before the others wrote
    others, more_errors = _writers(tmp_path, group, observed, range(1, 7))
    for t in others:
        t.start()
    _wait_until(lambda: group.waiting == 6, "the six writers waiting")
    observed.release.set()
    for t in [*first, *others]:
        t.join(60)
    assert not errors and not more_errors
    # The held sync, then one more for the six that came while it ran: two, not seven.
    assert group.syncs == 2 and observed.calls == 2
    position = {event: k for k, event in enumerate(observed.events)}
    for i in range(7):
        covering = [
            n
            for n in (1, 2)
            if position[("written", i)] < position[("sync-start", n)]
            and position[("sync-end", n)] < position[("returned", i)]
        ]
        assert covering, f"writer {i} returned without a sync that began after its write"


def test_a_failed_sync_fails_everyone_waiting_on_it_and_the_next_caller_syncs_again(tmp_path):
    observed = Observed(hold_first=True, fail_first=True)  # a disk error on the first sync
    group = GroupSync(tmp_path, observed)
    threads, errors = _writers(tmp_path, group, observed, range(4))
    threads[0].start()
    observed.entered.wait(60)
    for t in threads[1:]:
        t.start()
    _wait_until(lambda: group.waiting == 3, "three writers waiting")
    observed.release.set()
    for t in threads:
        t.join(60)
    assert sorted(errors) == [0, 1, 2, 3]
    assert all(isinstance(e, OSError) for e in errors.values())
    group.sync()  # a later caller is not failed by an old error: it gets a sync of its own
    assert observed.calls == 2


@pytest.mark.django_db(transaction=True)
def test_the_door_commits_no_row_before_the_sync_that_covers_its_file(
    site_a, settings, tmp_path, monkeypatch
):
    settings.MEDIA_ROOT = tmp_path / "store"
    settings.STORAGE_KEYS = "t1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
    seen: list[tuple[int, bool]] = []
    real_sync = GroupSync.sync

    def sync(self: GroupSync) -> None:
        # What the database holds while the files wait for their sync: no row of this batch.
        real_sync(self)
        try:  # on the writer's thread: its own connection sees only committed rows
            seen.append((self.syncs, Instance.objects.exists()))
        finally:
            connection.close()

    monkeypatch.setattr(GroupSync, "sync", sync)
    outcomes = series_ingest(
        site=site_a, files=[to_bytes(mr_dataset(i)) for i in range(1, 4)], source="stow"
    )
    assert [o.status for o in outcomes] == ["accepted"] * 3
    assert seen and all(not committed for _, committed in seen)
    assert Instance.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_committed_file_is_not_written_again_by_a_resend(site_a, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "store"
    settings.STORAGE_KEYS = "t1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
    data = to_bytes(mr_dataset(5))
    (first,) = series_ingest(site=site_a, files=[data], source="stow")
    path = settings.MEDIA_ROOT / Instance.objects.get().storage_key
    before = (path.read_bytes(), path.stat().st_ino, path.stat().st_mtime_ns)
    (again,) = series_ingest(site=site_a, files=[data], source="stow")
    assert (first.status, again.status) == ("accepted", "duplicate")
    # Encryption draws a fresh nonce: a rewrite would change the bytes.
    assert (path.read_bytes(), path.stat().st_ino, path.stat().st_mtime_ns) == before


@pytest.mark.django_db(transaction=True)
def test_a_process_killed_between_its_writes_and_its_commit_leaves_nothing_that_counts(
    site_a, settings, tmp_path
):
    """The sender's process dies after writing its files at their keys, before the sync and the
    commit: no row exists, and the next copy of the same instance lands over the leftover."""
    requires_servers()  # the child must see the test database
    keys = "t1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
    var = tmp_path / "var"
    settings.MEDIA_ROOT = var / "store"
    settings.STORAGE_KEYS = keys
    data_path = tmp_path / "slice.dcm"
    data_path.write_bytes(to_bytes(mr_dataset(3)))
    env = _server_env(settings.DATABASES["default"]["NAME"])
    env.update(
        ARTISCAN_VAR_DIR=str(var),
        ARTISCAN_STORAGE_KEYS=keys,
        ARTISCAN_DEID_KEY=settings.DEID_KEY.decode(),
    )
    script = (
        "import os, signal\n"
        "from backend.storage import store\n"
        "store.GroupSync.sync = lambda self: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from backend.accounts.models import Site\n"
        "from backend.ingest.services import series_ingest\n"
        f"data = open({str(data_path)!r}, 'rb').read()\n"
        f"series_ingest(site=Site.objects.get(pk={site_a.pk}), files=[data], source='stow')\n"
    )
    child = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v0", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stderr.decode()[-2000:]
    leftovers = list((var / "store" / "instances").rglob("*.dcm"))
    assert len(leftovers) == 1  # written at its key, never synced, never committed
    assert not Instance.objects.exists()
    (outcome,) = series_ingest(site=site_a, files=[data_path.read_bytes()], source="stow")
    assert outcome.status == "accepted"
    row = Instance.objects.get()
    assert var / "store" / row.storage_key == leftovers[0]
    assert store_get(row.storage_key)[128:132] == b"DICM"


@pytest.mark.django_db(transaction=True)
def test_a_failed_sync_fails_the_batch_and_leaves_no_row_and_no_file(
    site_a, settings, tmp_path, monkeypatch
):
    """A disk error reported by the sync (injected: a test cannot cause one for real) is not
    papered over by syncing file by file afterwards: the ingest fails, its rows roll back and
    its files go."""
    settings.MEDIA_ROOT = tmp_path / "store"
    settings.STORAGE_KEYS = "t1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
    monkeypatch.setattr(GroupSync, "_run", lambda self: errno.EIO)
    with pytest.raises(OSError):
        series_ingest(site=site_a, files=[to_bytes(mr_dataset(i)) for i in (1, 2)], source="stow")
    assert not Instance.objects.exists()
    assert not list((tmp_path / "store").rglob("*.dcm"))


@pytest.mark.django_db(transaction=True)
def test_after_a_database_error_past_the_writes_the_files_stay_and_a_resend_lands(
    site_a, settings, tmp_path
):
    """A database error once the files are written (here: the series row is locked by another
    session past ``lock_timeout``) has already ended the transaction on PostgreSQL and freed its
    rows, so a concurrent sender may own those keys now: the failed batch leaves its files
    (unreferenced, as after a crash) instead of deleting what may be the other's. No row
    stays, and the next copy of each instance lands over them and reads back."""
    requires_servers()
    import psycopg
    from django.db import DatabaseError

    settings.MEDIA_ROOT = tmp_path / "store"
    settings.STORAGE_KEYS = "t1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
    series_ingest(site=site_a, files=[to_bytes(mr_dataset(1))], source="stow")
    series = Instance.objects.get().series
    files = [to_bytes(mr_dataset(i)) for i in (2, 3, 4)]
    db = settings.DATABASES["default"]
    other = psycopg.connect(
        host=db.get("HOST") or "127.0.0.1",
        port=db.get("PORT") or 5432,
        user=db.get("USER") or "postgres",
        dbname=connection.settings_dict["NAME"],
    )
    try:
        other.execute(
            f"SELECT 1 FROM {series._meta.db_table} WHERE id = %s FOR UPDATE", [series.pk]
        )
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '300ms'")
        with pytest.raises(DatabaseError):
            series_ingest(site=site_a, files=files, source="stow")
    finally:
        other.rollback()
        other.close()
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
    assert Instance.objects.count() == 1
    left = sorted(p for p in settings.MEDIA_ROOT.rglob("*.dcm"))
    assert len(left) == 4  # the first instance's file and the three unreferenced ones
    outcomes = series_ingest(site=site_a, files=files, source="stow")
    assert [o.status for o in outcomes] == ["accepted"] * 3
    for instance in Instance.objects.all():
        assert store_get(instance.storage_key)[128:132] == b"DICM"
