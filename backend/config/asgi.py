"""ASGI entry point: HTTP through Django, WebSockets through Channels (``/ws/events/``)."""

from __future__ import annotations

import inspect
import io
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.config.settings")

from asgiref.sync import SyncToAsync, ThreadSensitiveContext, sync_to_async
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

if "daphne.server" in sys.modules:  # served by daphne: bodies in memory, in one message
    from django.conf import settings

    from backend.config.daphne_body import install

    install(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.core import signals  # noqa: E402
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers import base  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.http import FileResponse, HttpRequest, HttpResponseBase  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

from backend.realtime.routing import websocket_urlpatterns  # noqa: E402

# ``ThreadSensitiveContext(executor=...)``: asgiref 3.13 on (pinned). Older ones are left to
# Django's handler's own arrangement.
_EXECUTOR_CONTEXTS = "executor" in inspect.signature(ThreadSensitiveContext.__init__).parameters

logger = logging.getLogger(__name__)


class RequestThreads:
    """Each HTTP request's sync code (the view, the ORM, Django's signal receivers) runs on one
    thread, as Django arranges (thread-sensitive); here that thread is borrowed from a pool of
    idle ones instead of started for the request and joined by yet another thread after it
    (Django's default, two thread starts on the event loop per request). One request at a time
    per thread, as before; a thread keeps nothing of a request but what Django keeps per thread
    anyway (its database connection, closed or returned at the request's end as before)."""

    def __init__(self, app: Any, idle: int = 16) -> None:
        self.app = app
        self.keep = idle
        self.idle: list[ThreadPoolExecutor] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _EXECUTOR_CONTEXTS:
            await self.app(scope, receive, send)
            return
        executor = (
            self.idle.pop()
            if self.idle
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix="artiscan-request")
        )
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
        finally:
            if len(self.idle) < self.keep:
                self.idle.append(executor)
            else:
                executor.shutdown(wait=False)


class OneHopHandler(ASGIHandler):
    """Django's own request handling — every middleware, the URL conf, the view, the
    ``request_started``/``request_finished`` signals — with the middleware chain in sync mode,
    run in one hop to the request's thread.

    Django's ASGI handler runs the chain in async mode: each middleware that is not async-native
    (session, CSRF, auth, security, messages, clickjacking: Django's own) runs its request and
    response halves through ``sync_to_async``, a dozen thread switches per request before the
    sync view's own. For a request whose view is sync anyway and whose answer is small, that is
    most of what the request costs apart from its work (STOW-RS of one slice).
    The same code runs in the same order; only the switching is gone. The body is read as
    Django reads it (same in-memory limit); the response is sent as Django sends it."""

    def __init__(self) -> None:
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        response = await sync_to_async(self._respond, thread_sensitive=True)(scope, body_file)
        try:
            await self.send_response(response, send)
        finally:
            if response.streaming:  # not closed yet: its content is produced while it is sent
                await sync_to_async(response.close, thread_sensitive=True)()

    async def read_body(self, receive: Any) -> Any:
        """As Django reads it, except that a body that comes in one message (daphne's, see
        ``backend.config.daphne_body``) is read where it is instead of copied into a spool."""
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestAborted()
        if not message.get("more_body", False):
            return io.BytesIO(message.get("body", b""))
        pieces = [message]

        async def replay() -> Any:
            return pieces.pop() if pieces else await receive()

        return await super().read_body(replay)

    def _respond(self, scope: dict[str, Any], body_file: Any) -> HttpResponseBase:
        request = None
        try:
            set_script_prefix(get_script_prefix(scope))
            signals.request_started.send(sender=ASGIHandler, scope=scope)
            request, error_response = self.create_request(scope, body_file)
            response: Any = error_response if request is None else self.get_response(request)
            response._handler_class = self.__class__
            if isinstance(response, FileResponse):
                # As Django's handler: the server splits the body into packets, so a file goes
                # in 64 KiB messages, not FileResponse's 4 KiB blocks (OHIF's 17 MB bundle:
                # 266 messages instead of 4,240, each a hop from asyncio to Twisted).
                response.block_size = self.chunk_size
            if not response.streaming:
                # Its content is in memory: close it here (``request_finished``, which gives
                # the thread's database connection back) rather than in one more hop.
                _close(response)
            return response
        finally:
            body_file.close()
            if request is not None:
                release_body(request)


def _close(response: HttpResponseBase) -> None:
    """Close ``response`` before it is sent; a failure there (a ``request_finished`` receiver
    closing a broken database connection) is logged, and the answer still goes out, as under
    Django's handler, which closes after sending: a STOW-RS whose files are committed must not
    be answered 500."""
    try:
        response.close()
    except Exception:
        logger.exception("closing a finished response failed; the answer is sent anyway")


def release_body(request: HttpRequest) -> None:
    """Let go of a finished request's body. The request outlives its answer in reference
    cycles (DRF's ``Request`` and view refer to each other and to it) until Python's next full
    garbage collection, which the collector schedules by object counts, not bytes: a daphne
    process serving 50-slice STOW-RS requests held 4-8 finished 20 MB bodies at a time."""
    request.__dict__.pop("_body", None)
    request._stream = io.BytesIO()


class OneHopApp:
    """Every HTTP request through :class:`OneHopHandler`.

    First only STOW-RS took this route; over HTTP under daphne the async chain's thread switches
    cost every other request as much (``benchmarks/http_latency.py``: a WADO-RS frame, the
    viewer's most frequent request, ~0.7x the time this way; figures in the README). No view of
    the project is async, so nothing needs the async chain."""

    def __init__(self, one_hop: OneHopHandler) -> None:
        self.one_hop = one_hop

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.one_hop.handle(scope, receive, send)


class OwnSyncContext:
    """A WebSocket connection's sync calls (Channels' ``database_sync_to_async``: the session's
    user, the consumer's queries) go to asgiref's one process-wide sync thread, as under plain
    daphne, whatever context daphne created the connection's task in.

    Twisted's asyncio reactor runs its timers in the context of whichever task last scheduled
    the soonest one (``call_at`` copies the caller's context), and that is often an HTTP
    request's task, inside :class:`RequestThreads`' thread-sensitive context; the timers
    schedule themselves again from there, so the context outlives its request. Under
    ``manage.py serve``, a process holding connections resumes accepting from a timer
    (``backend.config.daphne_accept``), so new connections' tasks inherited that finished
    context, and asgiref refuses sync calls from it ("ThreadSensitiveContext has exited"):
    every WebSocket handshake after the first page's requests answered 500, and the worklist
    never went live (``tests/browser/test_live_under_serve.py``). An HTTP request enters a
    context of its own anyway (:class:`RequestThreads`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # This task's own copy of the context: no thread-sensitive context is current.
        SyncToAsync.thread_sensitive_context.set(None)  # type: ignore[arg-type]
        await self.app(scope, receive, send)


# What served every request but STOW-RS before the one hop: Django's handler, its requests on
# pooled threads. The baseline of ``benchmarks/http_latency.py``.
django_pooled_app = RequestThreads(django_asgi_app)

application = ProtocolTypeRouter(
    {
        "http": RequestThreads(OneHopApp(OneHopHandler())),
        "websocket": OwnSyncContext(
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
