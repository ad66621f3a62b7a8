"""What ingest announces after a commit, off the request's path: the ``instance.received``
event and the scoring request of each series, sent by one thread per process, coalesced.

A request hands ``(site, series, instance ids)`` over once its rows are committed and answers
at once; this thread publishes. Per series it publishes at once when the series was not
published in the last :data:`COALESCE_S` seconds, else once at the end of that window with
everything that arrived meanwhile (one event with all the ids, one scoring request). Every
hand-over is followed by a publish that starts after it, so a scoring task always begins after
the commit of every slice it is asked for; a slice sent alone, after a quiet moment, is
published with no wait. A series scored while slices still arrive picks them up anyway: the
task claims what is waiting until nothing is (``series_score``).

Guarantee kept: nothing accepted goes unscored. A publish that fails (broker down) is logged
and dropped; so is what a process held when it died. The periodic sweep
(:func:`backend.ingest.tasks.unscored_sweep_task`) asks again for every series that still has
an unscored slice some time after it arrived. Events are a live hint for the pages (the
worklist reloads on them); one lost with a dead process is not re-sent.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)

MAX_IDS = 500
"""At most this many instance ids in one coalesced event (``count`` still counts them all)."""


def coalesce_s() -> float:
    return float(getattr(settings, "ARTISCAN_INGEST_COALESCE_S", 0.1))


@dataclass
class _Pending:
    site_id: int
    source: str
    instance_ids: list[str] = field(default_factory=list)
    count: int = 0


class Dispatcher:
    """One per process (re-made after a fork): a queue of series with news and one thread."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._pending: dict[str, _Pending] = {}
        self._last: dict[str, float] = {}  # series id -> monotonic time of its last publish
        self._busy = 0  # rounds being sent (taken off ``_pending``, not yet published)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0  # scoring requests published (tests read it)

    # -- the request's side -----------------------------------------------------------------
    def submit(self, *, site_id: int, series_id: str, instance_ids: list[str], source: str) -> None:
        with self._cond:
            pending = self._pending.get(series_id)
            if pending is None:
                pending = self._pending[series_id] = _Pending(site_id=site_id, source=source)
            pending.source = source
            pending.count += len(instance_ids)
            pending.instance_ids = (pending.instance_ids + instance_ids)[-MAX_IDS:]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="artiscan-ingest-dispatch", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Publish everything handed over so far, without waiting for the windows; True when
        nothing is left (tests, and a process that exits)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._last.clear()  # every window is over now
            self._cond.notify_all()
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # -- the thread -------------------------------------------------------------------------
    def _take_due(self) -> dict[str, _Pending]:
        """Wait (lock held) until a series is due; take every due one."""
        window = coalesce_s()
        while True:
            now = time.monotonic()
            due: dict[str, _Pending] = {}
            wake: float | None = None
            for series_id in list(self._pending):
                ready_at = self._last.get(series_id, -1e9) + window
                if ready_at <= now:
                    due[series_id] = self._pending.pop(series_id)
                else:
                    wake = ready_at if wake is None else min(wake, ready_at)
            if due:
                for series_id in due:
                    self._last[series_id] = now
                # Forget windows long over (a busy day sees many series).
                for series_id, at in list(self._last.items()):
                    if at + window < now and series_id not in self._pending:
                        del self._last[series_id]
                self._busy += 1
                return due
            self._cond.wait(None if wake is None else max(0.0, wake - now))

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._take_due()
            try:
                self._send(due)
            except Exception:  # the thread must outlive any one round (the sweep covers it)
                logger.exception("ingest news of %d series not sent", len(due))
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _send(self, due: dict[str, _Pending]) -> None:
        from backend.realtime.services import events_publish
        from backend.scoring.services import series_score_publish

        if self._loop is None:
            # An event loop of this thread's own, kept: an async channel layer (Redis) keeps its
            # connections per loop, so they are made once, not once per round.
            self._loop = asyncio.new_event_loop()

        by_site: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        for series_id, pending in due.items():
            data = {
                "series_id": series_id,
                "instance_id": pending.instance_ids[-1],
                "instance_ids": pending.instance_ids,
                "count": pending.count,
                "source": pending.source,
            }
            by_site.setdefault(pending.site_id, []).append(("instance.received", data))
        try:
            for series_id in due:
                try:
                    series_score_publish(series_id=series_id)
                    self.published += 1
                except Exception:
                    # The sweep asks again for this series' slices (module docstring).
                    logger.exception("scoring request for series %s not sent", series_id)
            for site_id, events in by_site.items():
                try:
                    events_publish(site_id=site_id, events=events, loop=self._loop)
                except Exception:
                    logger.exception("instance.received events of site %s not sent", site_id)
        finally:
            # This thread lives as long as its process: give its connection back (or close
            # it) as a request would, so none is held between rounds.
            close_old_connections()


_dispatcher: Dispatcher | None = None
_lock = threading.Lock()


def dispatcher() -> Dispatcher:
    global _dispatcher
    with _lock:
        if _dispatcher is None or _dispatcher._pid != os.getpid():
            _dispatcher = Dispatcher()  # a forked child starts with none of its parent's
        return _dispatcher


def ingest_announce(*, site_id: int, series_id: str, instance_ids: list[str], source: str) -> None:
    """Hand the news of a committed batch over (call it after the commit)."""
    dispatcher().submit(
        site_id=site_id, series_id=series_id, instance_ids=instance_ids, source=source
    )


def ingest_flush(timeout: float = 10.0) -> bool:
    """Publish what this process holds now; True when nothing is left."""
    d = _dispatcher
    if d is None or d._pid != os.getpid():
        return True
    return d.flush(timeout)


@atexit.register
def _flush_at_exit() -> None:
    ingest_flush(timeout=5.0)
