"""Access alerts: a burst of denied attempts on one site's data by one user (security checklist
L-02). Every denied attempt is already on the audit trail, recorded against the site that owns
what was asked for; a user who gets ``ARTISCAN_DENIED_BURST`` (20) denials on one site within
``ARTISCAN_DENIED_BURST_WINDOW_S`` (600 s) is someone trying that site's studies one after
another — a stolen token walking UIDs, a script, a misconfigured viewer. The site's QA
administrators are told the way quality alerts tell them (e-mail and/or webhook, the dashboard),
with the user, the count, the time span and the addresses: no patient data.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Min, QuerySet
from django.utils import timezone

from backend.accounts.models import Site, User
from backend.audit.models import AuditEvent, AuditOutcome
from backend.dashboards.models import AccessAlert
from backend.dashboards.services import acknowledge, notify_later, notify_once

logger = logging.getLogger(__name__)

EVALUATION_LOCK = 0x41434345  # "ACCE": the advisory lock that serialises evaluations


def _denied(since: datetime, until: datetime) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(
        outcome=AuditOutcome.DENIED,
        at__gte=since,
        at__lte=until,
        site_id__in=Site.objects.values("pk"),
    ).order_by()


def access_alerts_evaluate(*, now: datetime | None = None) -> list[AccessAlert]:
    """Raise an alert for each (site, user) with ``ARTISCAN_DENIED_BURST`` denied attempts or
    more within the last ``ARTISCAN_DENIED_BURST_WINDOW_S`` seconds, unless one was raised for
    them within that window already (a burst that goes on is raised again once a window later).
    Returns the alerts raised; each is sent after the commit."""
    now = now or timezone.now()
    since = now - timedelta(seconds=settings.ARTISCAN_DENIED_BURST_WINDOW_S)
    bursts = (
        _denied(since, now)
        .values("site_id", "user_id", "username")
        .annotate(attempts=Count("id"), first_at=Min("at"), last_at=Max("at"))
        .filter(attempts__gte=settings.ARTISCAN_DENIED_BURST)
        .order_by("site_id", "username")
    )
    raised: list[AccessAlert] = []
    with transaction.atomic():
        # One evaluation at a time (two overlapping runs would each raise the same alert).
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [EVALUATION_LOCK])
        for burst in bursts:
            who = {k: burst[k] for k in ("site_id", "user_id", "username")}
            if AccessAlert.objects.filter(**who, last_at__gte=since).exists():
                continue
            addresses = (
                _denied(since, now)
                .filter(**who, source_ip__isnull=False)
                .values_list("source_ip", flat=True)
                .distinct()[:6]
            )
            alert = AccessAlert.objects.create(
                **who,
                attempts=burst["attempts"],
                first_at=burst["first_at"],
                last_at=burst["last_at"],
                source_ips=", ".join(sorted(str(a) for a in addresses))[:200],
            )
            logger.warning(
                "access alert: %d denied attempts by user %s on site %s",
                alert.attempts,
                alert.user_id,
                alert.site_id,
            )
            # Robust: one alert the broker could not take must not keep the others unsent.
            transaction.on_commit(partial(_notify_later, alert.pk), robust=True)
            raised.append(alert)
    return raised


def _notify_later(alert_id: int) -> None:
    from backend.dashboards.tasks import access_alert_notify_task

    notify_later(AccessAlert, alert_id, access_alert_notify_task)


def access_alert_payload(alert: AccessAlert) -> dict[str, object]:
    """What leaves the building about an access alert: the site, the account, counts, times and
    addresses; nothing of what was asked for."""
    return {
        "kind": "artiscan.access_alert",
        "id": alert.pk,
        "site": alert.site.slug,
        "user_id": alert.user_id,
        "username": alert.username,
        "attempts": alert.attempts,
        "first_at": alert.first_at.isoformat(),
        "last_at": alert.last_at.isoformat(),
        "source_ips": alert.source_ips,
        "audit_trail": f"{settings.ARTISCAN_PUBLIC_URL.rstrip('/')}/api/audit-events/"
        f"?site={alert.site_id}&outcome=denied",
    }


def _access_message(alert: AccessAlert) -> tuple[str, str, dict[str, object]]:
    payload = access_alert_payload(alert)
    minutes = max(1, round((alert.last_at - alert.first_at).total_seconds() / 60))
    subject = (
        f"[ArtiScan] {alert.attempts} denied attempts by {alert.username} on {alert.site.name}"
    )
    body = (
        f"Site {alert.site.name}: the account {alert.username!r} was refused {alert.attempts} "
        f"times within {minutes} min ({alert.first_at:%Y-%m-%d %H:%M} to "
        f"{alert.last_at:%H:%M} UTC) asking for data of this site it may not see, from "
        f"{alert.source_ips or 'unknown addresses'}. If nobody expects this, revoke the "
        f"account's tokens and look at the audit trail: {payload['audit_trail']}\n"
    )
    return subject, body, payload


def access_alert_notify(*, alert_id: int) -> AccessAlert:
    """Send one access alert as its site configured (``services.notify_once``)."""
    return cast(AccessAlert, notify_once(AccessAlert, alert_id, _access_message))


def access_alert_acknowledge(*, alert: AccessAlert, user: User, request: Any = None) -> AccessAlert:
    """Record who acknowledged the access alert and when (once), on the audit trail."""
    return cast(AccessAlert, acknowledge(AccessAlert, "access_alert", alert.pk, user, request))
