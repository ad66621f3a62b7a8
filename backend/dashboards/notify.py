"""The one place alerts leave the building: Django's mail and an HTTP POST to a site's webhook.
Tests replace nothing here; they point the webhook at a real local HTTP server."""

from __future__ import annotations

import json
import smtplib
import urllib.error
import urllib.request
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
    """POST ``payload`` as JSON; returns the HTTP status. Only http(s) URLs, no redirects
    followed (a redirect could carry the body somewhere the site did not configure)."""
    if urlsplit(url).scheme not in {"http", "https"}:
        raise ValueError("webhook URL must be http or https")

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "ArtiScan-alerts"},
        method="POST",
    )
    try:
        with opener.open(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise NotifyError(f"webhook: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise NotifyError(f"webhook: {exc}") from exc
