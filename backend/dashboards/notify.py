"""The one place alerts leave the building: Django's mail and an HTTP POST to a site's webhook.
Tests replace nothing here; they point the webhook at a real local HTTP server."""

from __future__ import annotations

import http.client
import json
import smtplib
import socket
import threading
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import send_mail

WEBHOOK_TIMEOUT_S = 10


class NotifyError(Exception):
    """Sending failed in a way worth retrying (network, server error)."""


def mail_send(*, subject: str, body: str, recipients: list[str]) -> None:
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=False)
    except (smtplib.SMTPException, OSError) as exc:
        raise NotifyError(f"mail: {exc}") from exc


def webhook_post(*, url: str, payload: dict[str, object]) -> int:
    """POST ``payload`` as JSON; returns the HTTP status (2xx; anything else is a NotifyError).
    Only http(s) URLs, no redirects followed (a redirect could carry the body somewhere the site
    did not configure), and the whole exchange ends within ``WEBHOOK_TIMEOUT_S``.

    A socket timeout bounds each read only: a server that sends a byte at a time would hold
    the worker for as long as it likes, so a watchdog cuts the connection at the deadline.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("webhook URL must be http or https")
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    expired = threading.Event()

    def cut(conn: http.client.HTTPConnection) -> None:
        expired.set()
        if conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    try:
        conn = connection_class(parts.hostname, parts.port, timeout=WEBHOOK_TIMEOUT_S)
    except ValueError as exc:  # a malformed port
        raise NotifyError(f"webhook: {exc}") from None
    watchdog = threading.Timer(WEBHOOK_TIMEOUT_S, cut, args=(conn,))
    watchdog.start()
    try:
        conn.request(
            "POST",
            target,
            body=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "ArtiScan-alerts"},
        )
        status = int(conn.getresponse().status)
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise NotifyError(f"webhook: no answer within {WEBHOOK_TIMEOUT_S} s") from None
        raise NotifyError(f"webhook: {exc}") from exc
    finally:
        watchdog.cancel()
        conn.close()
    if expired.is_set():  # cut mid-answer: what was read may be truncated (the end of headers)
        raise NotifyError(f"webhook: no answer within {WEBHOOK_TIMEOUT_S} s")
    if not 200 <= status < 300:  # 3xx included: redirects are not followed
        raise NotifyError(f"webhook: HTTP {status}")
    return status
