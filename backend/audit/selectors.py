from __future__ import annotations

from django.db.models import Q, QuerySet

from backend.audit.models import AuditEvent


def audit_event_list(
    *,
    site_ids: set[int],
    include_siteless: bool = False,
    site: int | None = None,
    action: str | None = None,
    outcome: str | None = None,
) -> QuerySet[AuditEvent]:
    """Audit rows of ``site_ids``; rows with no site (a denied access to an object that does not
    exist) are for the superuser only."""
    scope = Q(site_id__in=site_ids)
    if include_siteless:
        scope |= Q(site_id__isnull=True)
    qs = AuditEvent.objects.filter(scope)
    if site is not None:
        qs = qs.filter(site_id=site)
    if action is not None:
        qs = qs.filter(action=action)
    if outcome is not None:
        qs = qs.filter(outcome=outcome)
    return qs.order_by("-at", "-id")
