"""The one way audit rows are written."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest

from backend.accounts.models import Membership, User
from backend.audit.middleware import current_request_id
from backend.audit.models import AuditAction, AuditEvent, AuditOutcome
from backend.config.prepared import PreparedInsert

# Every request that reads or writes clinical data appends here: the INSERT is made once
# (backend.config.prepared). The rows' ids are the database's and are not read back.
_INSERT_EVENTS = PreparedInsert(AuditEvent)


@dataclass(frozen=True)
class AuditTarget:
    """What was accessed: the object, the site it belongs to and its study's pseudonymous UID."""

    object_type: str
    object_id: str
    site_id: int | None
    study_uid: str = ""


def _client_ip(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def audit_record(
    *,
    user: User | AnonymousUser,
    action: AuditAction,
    targets: Iterable[AuditTarget],
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    request: HttpRequest | None = None,
    roles_by_site: dict[int, list[str]] | None = None,
) -> list[AuditEvent]:
    """Append one audit row per target (one per study for a list); returns the rows, without
    their ids. ``roles_by_site``: the user's roles per site id when the caller has just read
    them (``sender_for``), else they are read here."""
    targets = list(targets)
    if not targets:
        return []
    authenticated = isinstance(user, User)
    if not isinstance(user, User):
        roles_by_site = {}
    elif roles_by_site is None:
        roles_by_site = {}
        for site_id, role in Membership.objects.filter(user=user).values_list("site_id", "role"):
            roles_by_site.setdefault(site_id, []).append(role)
    rows = []
    for target in targets:
        roles = roles_by_site.get(target.site_id or -1, [])
        if authenticated and user.is_superuser:
            roles = [*roles, "superuser"]
        rows.append(
            AuditEvent(
                user_id=user.pk if authenticated else None,
                username=user.get_username() if authenticated else "anonymous",
                roles=",".join(sorted(roles)),
                site_id=target.site_id,
                action=action,
                outcome=outcome,
                object_type=target.object_type,
                object_id=target.object_id,
                study_uid=target.study_uid,
                source_ip=_client_ip(request),
                request_id=current_request_id(),
            )
        )
    _INSERT_EVENTS.insert(rows)
    return rows


def denied_record(
    *, user: User | AnonymousUser, action: AuditAction, target: AuditTarget, request: HttpRequest
) -> None:
    """A denied attempt on ``target`` (a 404 for another site's object, a 403 for what the
    caller's own site holds but they may not have): one ``denied`` row against its site, for
    a signed-in caller (an anonymous one never got past authentication)."""
    if getattr(user, "is_authenticated", False):
        audit_record(
            user=user, action=action, targets=[target], outcome=AuditOutcome.DENIED, request=request
        )
