"""The one place alerts leave the building: Django's mail and an HTTP POST to a site's webhook.
Tests replace nothing here; they point the webhook at a real local HTTP server."""

from __future__ import annotations

import http.client
import ipaddress
import json
import smtplib
import socket
import ssl
import threading
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import send_mail

WEBHOOK_TIMEOUT_S = 10


class NotifyError(Exception):
    """Sending failed in a way worth retrying (network, server error)."""


class WebhookRefused(NotifyError):
    """The webhook's host is, or resolves to, an address this installation does not post to."""


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _allow_list() -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """``ARTISCAN_WEBHOOK_ALLOW``: host names and IP networks (CIDR or single addresses) that
    may be posted to even though they are not public (an intranet alert relay)."""
    names: set[str] = set()
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in getattr(settings, "ARTISCAN_WEBHOOK_ALLOW", []):
        entry = entry.strip().lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.rstrip("."))
    return names, networks


def _address_allowed(
    address: Address, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in networks):
        return True
    return address.is_global and not address.is_multicast


def webhook_check(url: str, *, resolve: bool = True) -> list[Address]:
    """The addresses ``url`` may be posted to; raises :class:`WebhookRefused` when its host is
    internal (loopback, private, link-local — cloud metadata —, reserved, multicast) and not
    in ``ARTISCAN_WEBHOOK_ALLOW``, so a site administrator cannot aim the alert sender at the
    installation's own network (server-side request forgery).

    Every address the name resolves to must pass, and the caller connects to one of those very
    addresses, so a name that resolves differently a moment later (DNS rebinding) gains
    nothing. With ``resolve=False`` (saving the setting, where the name may only resolve inside
    the hospital) a name is judged by its spelling only: literal addresses and ``localhost``.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise WebhookRefused("webhook URL must be http or https")
    host = parts.hostname.lower().rstrip(".")
    names, networks = _allow_list()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookRefused("webhook: the URL's port is not a number") from None
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if host not in names and not _address_allowed(literal, networks):
            raise WebhookRefused(f"webhook: {host} is an internal address")
        return [literal]
    if host == "localhost" or host.endswith(".localhost"):
        if host not in names:
            raise WebhookRefused(f"webhook: {host} is an internal address")
    if not resolve:
        return []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise NotifyError(f"webhook: cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if host not in names:
        refused = [a for a in addresses if not _address_allowed(a, networks)]
        if refused:
            raise WebhookRefused(f"webhook: {host} resolves to internal address {refused[0]}")
    return addresses


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an address already checked; the Host header keeps the URL's name."""

    def __init__(
        self, host: str, port: int | None, *, addresses: list[str], timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self.addresses = addresses

    def connect(self) -> None:
        self.sock = _connect(self.addresses, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As above, with TLS verified against the URL's name (not the address)."""

    def __init__(
        self, host: str, port: int | None, *, addresses: list[str], timeout: float
    ) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.addresses = addresses

    def connect(self) -> None:
        raw = _connect(self.addresses, self.port, self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


def _connect(addresses: list[str], port: int, timeout: float | None) -> socket.socket:
    """The first of the checked addresses that accepts a connection."""
    error: OSError = OSError("no address to connect to")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            error = exc
    raise error


def mail_send(*, subject: str, body: str, recipients: list[str]) -> None:
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=False)
    except (smtplib.SMTPException, OSError) as exc:
        raise NotifyError(f"mail: {exc}") from exc


def webhook_post(*, url: str, payload: dict[str, object]) -> int:
    """POST ``payload`` as JSON; returns the HTTP status (2xx; anything else is a NotifyError).
    Only http(s) URLs, no redirects followed (a redirect could carry the body somewhere the site
    did not configure), and the whole exchange ends within ``WEBHOOK_TIMEOUT_S``.

    Internal destinations are refused (:func:`webhook_check`); the connection goes to the
    checked address.

    A socket timeout bounds each read only: a server that sends a byte at a time would hold
    the worker for as long as it likes, so a watchdog cuts the connection at the deadline.
    """
    parts = urlsplit(url)
    addresses = [str(a) for a in webhook_check(url)]
    connection_class = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
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
        conn = connection_class(
            parts.hostname or "", parts.port, addresses=addresses, timeout=WEBHOOK_TIMEOUT_S
        )
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
