"""A refusal that the audit trail records.

A caller who cannot see an object's site gets a 404 and a ``denied`` row (``NotInScope``). A
caller who sees the site but may not do this (an annotator reviewing, a blinded reader asking
for the model's masks, a reader finishing someone else's series) gets a 403; raised as
``Refused``, that 403 is a ``denied`` row against the object's site too, so the site's access
alerts count it like any other denied attempt (security checklist L-02)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

from backend.audit.services import AuditTarget


class Refused(PermissionDenied):
    """403 with ``message``; ``target``: the object refused, with its site (for the audit row)."""

    def __init__(self, message: str, *, target: AuditTarget) -> None:
        super().__init__(message)
        self.target = target
