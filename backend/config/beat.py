"""Celery beat's scheduler, made to outlive a broker failure.

Celery's ``Scheduler`` opens one broker connection and one producer on its first tick and keeps
both for the life of the process (``cached_property``). After one failed publish — Redis
restarted, a network blip, the embedded SQLite broker answering ``locking protocol`` — the
channel stays closed and every later publish fails too ("channel disconnected", logged and
skipped: celery/celery#3409, #8845): the dashboards were never refreshed again and the sweep
that re-asks for lost scoring requests never ran again, until beat was restarted. Here a
failed publish drops the connection and the producer and tries once more on new ones; the
next tick starts afresh either way.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from celery.beat import PersistentScheduler, SchedulingError

logger = logging.getLogger(__name__)


class ReconnectingScheduler(PersistentScheduler):
    def apply_async(
        self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        try:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        except SchedulingError as failure:
            logger.warning("beat: %s; publishing again on a new broker connection", failure)
            self.reconnect()
            # Already advanced (or not to be): the retry sends this run, it does not skip one.
            return super().apply_async(entry, producer=self.producer, advance=False, **kwargs)

    def reconnect(self) -> None:
        """Forget the producer and the connection; the next publish opens new ones."""
        self.__dict__.pop("producer", None)
        connection = self.__dict__.pop("connection", None)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.collect()  # let go of its sockets or files without talking to it
