"""Automatic logoff of an idle browser session (security checklist A-09; ASVS 3.3.2, HIPAA
§164.312(a)(2)(iii)): a session unused for ``ARTISCAN_SESSION_IDLE_SECONDS`` is ended on the
server at its next request, whatever is left of its absolute lifetime
(``ARTISCAN_SESSION_SECONDS``), and a live-events WebSocket of that session is closed at its
next check (``backend.realtime.consumers``). Only HTTP requests a person made are use: an open
WebSocket that merely listens does not keep a session alive, nor do the requests a page makes
by itself when an event arrives (the worklist reloading as slices come in), which say so with
the ``X-ArtiScan-Background`` header. The absolute lifetime counts from signing in: Django
moves a session's expiry forward whenever the session is saved, so it is enforced here too.
Bearer-token requests carry no session and are not touched."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY, logout
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

LAST_SEEN = "artiscan_last_seen"
SIGNED_IN = "artiscan_signed_in"
BACKGROUND_HEADER = "X-ArtiScan-Background"
"""Sent by a page's own requests (a reload on a live event): not use of the session."""
TOUCH_EVERY_S = 60
"""The session's last-seen time is written at most this often (a session write per request
would be a database write per WADO-RS frame)."""


def session_idle(session: Mapping[str, Any], now: float | None = None) -> bool:
    """Whether a signed-in session has gone unused for longer than the idle limit (a session
    without a last-seen time, from before this existed, is not idle: its next request starts
    the clock)."""
    last = session.get(LAST_SEEN)
    if last is None:
        return False
    current = time.time() if now is None else now
    return current - int(last) > settings.ARTISCAN_SESSION_IDLE_SECONDS


def session_expired(session: Mapping[str, Any], now: float | None = None) -> bool:
    """Whether a signed-in session is idle (:func:`session_idle`) or older than its absolute
    lifetime (``ARTISCAN_SESSION_SECONDS`` since signing in)."""
    current = time.time() if now is None else now
    signed_in = session.get(SIGNED_IN)
    if signed_in is not None and current - int(signed_in) > settings.SESSION_COOKIE_AGE:
        return True
    return session_idle(session, current)


class SessionIdleTimeoutMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = request.session
        if session.get(SESSION_KEY) is not None:
            now = int(time.time())
            last = session.get(LAST_SEEN)
            if session_expired(session, now):
                logout(request)  # flushed server-side; the request goes on anonymous
            else:
                if session.get(SIGNED_IN) is None:  # a session from before this existed
                    session[SIGNED_IN] = now
                if not request.headers.get(BACKGROUND_HEADER) and (
                    last is None or now - int(last) >= TOUCH_EVERY_S
                ):
                    session[LAST_SEEN] = now
        return self.get_response(request)


@receiver(user_logged_in)
def seen_at_login(sender: Any, request: HttpRequest | None, **kwargs: Any) -> None:
    """Signing in is use: the session starts with its last-seen and signed-in times."""
    if request is not None and hasattr(request, "session"):
        now = int(time.time())
        request.session[LAST_SEEN] = now
        request.session[SIGNED_IN] = now
