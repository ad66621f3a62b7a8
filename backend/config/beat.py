"""Celery beat's scheduler, made to outlive a broker failure.

Celery's ``Scheduler`` opens one broker connection and one producer on its first tick and keeps
both for the life of the process (``cached_property``). After one failed publish — Redis
restarted, a network blip, the embedded SQLite broker answering ``locking protocol`` — the
channel stays closed and every later publish fails too ("channel disconnected", logged and
skipped: celery/celery#3409, #8845): the dashboards were never refreshed again and the sweep
that re-asks for lost scoring requests never ran again, until beat was restarted. Here a
failed publish drops the connection and the producer and tries once more on new ones (when
that fails too, the next publish starts on new ones again); when no connection can be made at
all, the tick gives up after ``CONNECT_RETRIES`` quick attempts and the next one comes
``RETRY_S`` later — where Celery's own retries would hold a tick for ~47 minutes and then end
beat.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from celery.beat import PersistentScheduler, SchedulingError

logger = logging.getLogger(__name__)

CONNECT_RETRIES = 2
"""Attempts to connect within one tick (then the tick gives up and the next one tries)."""
RETRY_S = 5.0
"""Seconds to the next tick after one that could not reach the broker."""


class ReconnectingScheduler(PersistentScheduler):
    def apply_async(
        self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        try:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        except SchedulingError as failure:
            logger.warning("beat: %s; publishing again on a new broker connection", failure)
            self.reconnect()
        try:
            # Already advanced (or not to be): the retry sends this run, it does not skip one.
            return super().apply_async(entry, producer=self.producer, advance=False, **kwargs)
        except Exception:
            self.reconnect()  # not this dead one again next time
            raise

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            return float(super().tick(*args, **kwargs))
        except Exception as failure:
            # No producer could be made (the broker still away). The run this tick took is
            # skipped (already advanced; the next one goes); the heap is rebuilt next tick.
            logger.warning("beat: broker unavailable (%s); trying again in %g s", failure, RETRY_S)
            self.reconnect()
            self._heap = None
            return RETRY_S

    def _ensure_connected(self) -> Any:
        def error(exc: Exception, interval: float) -> None:
            logger.warning("beat: cannot reach the broker (%s); again in %g s", exc, interval)

        return self.connection.ensure_connection(
            error, max_retries=CONNECT_RETRIES, interval_start=1, interval_step=1, interval_max=2
        )

    def reconnect(self) -> None:
        """Forget the producer and the connection; the next publish opens new ones."""
        self.__dict__.pop("producer", None)
        connection = self.__dict__.pop("connection", None)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.collect()  # let go of its sockets or files without talking to it
