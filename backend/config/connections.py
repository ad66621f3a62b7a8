"""Process-wide hygiene of Django's database connections."""

from __future__ import annotations

from typing import Any

from django.db import connections


def forget_handled_errors(**_: Any) -> None:
    """Let go of database errors that were raised inside a transaction and handled.

    Django keeps the last such error on its connection (``rollback_exc``, for the message of a
    later ``TransactionManagementError``) and never clears it. A connection lives as long as
    its thread (the web server's pooled request threads, a worker), and the error's traceback
    holds every frame it went through and each frame's locals: after a ``get_or_create`` lost
    a race with a concurrent sender of the same series (an ``IntegrityError``, caught), the
    whole STOW-RS request stayed in memory, its 20 MB body included, until the thread's next
    such error — tens of MB per thread of a web process. The error is forgotten only once no
    transaction is marked for rollback because of it. Called at the end of every request
    (``request_finished``), task and ``series_ingest``.
    """
    for connection in connections.all(initialized_only=True):
        # ``rollback_exc``: set by Django's atomic blocks, not declared on the wrapper's class.
        error: BaseException | None = getattr(connection, "rollback_exc", None)
        if not connection.needs_rollback and error is not None:
            _drop_tracebacks(error)
            connection.rollback_exc = None  # type: ignore[attr-defined]


def _drop_tracebacks(error: BaseException) -> None:
    """Detach the tracebacks of ``error`` and of the errors it was raised from or during.

    Django's database error wrapper re-raises the driver's error from a frame that refers to
    both, so each error is in a reference cycle with its own traceback: unreferenced, the
    request's frames would still wait for Python's next full garbage collection, which the
    collector schedules by object counts, not bytes."""
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
