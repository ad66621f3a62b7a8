"""The base of every API view that returns clinical data: audits it and keeps it out of caches
(except a view's own ``private, max-age`` on content that never changes under its URL).

A view calls ``self.accessed(objects)`` with what it is about to return; the audit rows are then
written by ``audit_record`` once the response succeeds, a ``NotInScope`` from a selector
becomes a 404 plus a ``denied`` audit row, and a ``Refused`` (``refuse``) a 403 plus one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.utils.cache import patch_vary_headers
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.audit.exceptions import Refused
from backend.audit.models import AuditAction
from backend.audit.services import AuditTarget, audit_record, denied_record
from backend.studies.models import Instance, Series, Study
from backend.studies.selectors import NotInScope


def audit_target_for(obj: object) -> AuditTarget:
    if isinstance(obj, Study):
        return AuditTarget("study", str(obj.pk), obj.site_id, obj.study_uid)
    if isinstance(obj, Series):
        return AuditTarget("series", str(obj.pk), obj.site_id, obj.study.study_uid)
    if isinstance(obj, Instance):
        return AuditTarget("instance", str(obj.pk), obj.site_id, obj.series.study.study_uid)
    raise TypeError(f"no audit target for {type(obj).__name__}")


def refuse(message: str, obj: object) -> Refused:
    """The 403 to raise when the caller sees ``obj``'s site but may not do this to it."""
    return Refused(message, target=audit_target_for(obj))


def one_per_study(targets: Iterable[AuditTarget]) -> list[AuditTarget]:
    """The first target of each (site, study): a list touching ten series of one study is one
    access to that study."""
    unique: dict[tuple[int | None, str], AuditTarget] = {}
    for target in targets:
        unique.setdefault((target.site_id, target.study_uid), target)
    return list(unique.values())


class ClinicalAPIView(APIView):
    audit_action: AuditAction = AuditAction.VIEW

    def accessed(self, objects: Iterable[object], *, per_study: bool = False) -> None:
        self.accessed_targets([audit_target_for(o) for o in objects], per_study=per_study)

    def accessed_targets(self, targets: list[AuditTarget], *, per_study: bool = False) -> None:
        """``accessed`` for a view that knows its targets without loading the objects."""
        self._audit_targets = one_per_study(targets) if per_study else targets

    def audit_now(
        self,
        targets: list[AuditTarget],
        *,
        per_study: bool = False,
        roles_by_site: dict[int, list[str]] | None = None,
    ) -> None:
        """Write the success rows of ``targets`` now, in the caller's transaction, instead of
        after the response: for a write whose answer is a success once it commits (STOW-RS).
        The rows then commit, or roll back, with the writes they record, and the request pays
        one commit instead of two. ``roles_by_site``: the user's roles, where the view has
        just read them (``sender_for``)."""
        if not targets:
            return
        self.accessed_targets(targets, per_study=per_study)
        audit_record(
            user=self.request.user,
            action=self.audit_action,
            targets=self._audit_targets,
            request=self.request,
            roles_by_site=roles_by_site,
        )
        self._audit_targets = []

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, NotInScope):
            denied_record(
                user=self.request.user,
                action=self.audit_action,
                target=AuditTarget(exc.object_type, exc.object_id, exc.site_id),
                request=self.request,
            )
            exc = exceptions.NotFound()
        elif isinstance(exc, Refused):
            denied_record(
                user=self.request.user,
                action=self.audit_action,
                target=exc.target,
                request=self.request,
            )
        return super().handle_exception(exc)

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        targets = getattr(self, "_audit_targets", None)
        if targets and response.status_code < 400:
            audit_record(
                user=request.user, action=self.audit_action, targets=targets, request=request
            )
        # A successful answer whose content never changes under its URL (a mask version, a
        # frame) may say so itself with ``private, max-age=...``: only this browser keeps it, and
        # only for the same session (Vary), so another user signing in here does not get it.
        # Everything else, refusals and errors included, is never stored.
        if response.status_code == 200 and response.get("Cache-Control", "").startswith(
            "private, max-age="
        ):
            patch_vary_headers(response, ("Authorization", "Cookie"))
        else:
            response["Cache-Control"] = "no-store"
        return response
