"""The ASGI application runs each HTTP request's sync code on a thread borrowed from a pool:
one thread per request at a time, the same threads again for the next requests."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async

from backend.config.asgi import RequestThreads


def test_requests_borrow_threads_one_at_a_time_and_give_them_back():
    seen: list[tuple[str, int]] = []
    both_in = threading.Barrier(2, timeout=10)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        def view() -> None:
            seen.append((scope["path"], threading.get_ident()))
            if scope["path"].startswith("/together"):
                both_in.wait()  # two requests at once: two threads, or this never returns

        await sync_to_async(view)()  # thread-sensitive, as Django runs a sync view
        await sync_to_async(view)()  # the same request again: the same thread

    threads = RequestThreads(app, idle=4)

    async def requests() -> None:
        await threads({"type": "http", "path": "/one"}, None, None)
        await threads({"type": "http", "path": "/two"}, None, None)
        await asyncio.gather(
            threads({"type": "http", "path": "/together-a"}, None, None),
            threads({"type": "http", "path": "/together-b"}, None, None),
        )

    async_to_sync(requests)()
    by_path: dict[str, set[int]] = {}
    for path, ident in seen:
        by_path.setdefault(path, set()).add(ident)
    assert all(len(idents) == 1 for idents in by_path.values()), by_path
    # Sequential requests reuse the idle thread; concurrent ones get one each.
    assert by_path["/one"] == by_path["/two"]
    assert by_path["/together-a"] != by_path["/together-b"]
    assert by_path["/one"] <= by_path["/together-a"] | by_path["/together-b"]
    assert threading.get_ident() not in by_path["/one"]
    assert len(threads.idle) == 2
