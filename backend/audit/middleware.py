"""A request id on every request and every log line, so an audit row can be tied to the logs."""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SAFE_ID = re.compile(r"^[A-Za-z0-9-]{8,36}$")


def current_request_id() -> str:
    return _request_id.get()


def _request_id_of(request: HttpRequest) -> str:
    incoming = request.headers.get("X-Request-ID", "")
    # A client-supplied id is kept only if harmless (no CR/LF or ANSI into the logs).
    return incoming if _SAFE_ID.match(incoming) else str(uuid.uuid4())


class RequestIdMiddleware:
    """Sync and async: under ASGI the chain stays on the event loop up to the view, instead of
    hopping to a thread for this middleware and back to the loop for the next ones (each hop a
    thread switch on every request)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        request_id = _request_id_of(request)
        token = _request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response["X-Request-ID"] = request_id
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        request_id = _request_id_of(request)
        # The view's thread (sync_to_async) runs in a copy of this context: its log lines and
        # audit rows see the id.
        token = _request_id.set(request_id)
        try:
            response = await self.get_response(request)
        finally:
            _request_id.reset(token)
        response["X-Request-ID"] = request_id
        return response


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True
