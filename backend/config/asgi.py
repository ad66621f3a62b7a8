"""ASGI entry point: HTTP through Django, WebSockets through Channels (``/ws/events/``)."""

from __future__ import annotations

import inspect
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.config.settings")

from asgiref.sync import ThreadSensitiveContext
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from backend.realtime.routing import websocket_urlpatterns  # noqa: E402

# ``ThreadSensitiveContext(executor=...)``: asgiref 3.13 on. Older ones get Django's default.
_EXECUTOR_CONTEXTS = "executor" in inspect.signature(ThreadSensitiveContext.__init__).parameters


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


application = ProtocolTypeRouter(
    {
        "http": RequestThreads(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
