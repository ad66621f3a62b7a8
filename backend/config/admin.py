"""The installation's admin pages: superusers only, and every read of them on the audit trail.

The Django admin shows every site's rows (it is not site-scoped, and a site's admins manage
their site in the product's own pages, which are), so only the installation's superusers may
use it, whatever ``is_staff`` says (security checklist A-05). What they read there is on the
audit trail like any other read (L-01): one row per page of a model, with the object's id for
an object's page; Django's own admin log keeps what they changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.contrib.admin import AdminSite, ModelAdmin
from django.http import HttpRequest, HttpResponseBase

from backend.audit.models import AuditAction
from backend.audit.services import AuditTarget, audit_record

_View = TypeVar("_View", bound=Callable[..., HttpResponseBase])

# The model pages whose reads are audited, by view name (the rest are forms and redirects).
_READS = {
    "changelist_view": AuditAction.LIST,
    "change_view": AuditAction.VIEW,
    "history_view": AuditAction.VIEW,
    "delete_view": AuditAction.VIEW,  # the confirmation page; a delete is in the admin log
}


class ArtiScanAdminSite(AdminSite):
    site_header = "ArtiScan administration"
    site_title = "ArtiScan admin"

    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_active and user.is_superuser)

    def admin_view(self, view: _View, cacheable: bool = False) -> _View:
        owner = getattr(view, "__self__", None)
        name = getattr(view, "__name__", "")
        if isinstance(owner, ModelAdmin) and name in _READS:
            label, action = owner.model._meta.label_lower[:32], _READS[name]
        elif name == "autocomplete_view":  # search results of a related field
            label, action = "admin.autocomplete", AuditAction.LIST
        else:
            return super().admin_view(view, cacheable)

        def audited(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            response = view(request, *args, **kwargs)
            # Whatever the method: a POST shows data too (a form shown again with its errors,
            # the confirmation of a bulk delete).
            if response.status_code == 200:
                object_id = str(kwargs.get("object_id", ""))[:64]
                if name == "autocomplete_view":  # the related field searched from
                    asked = [
                        request.GET.get(k, "") for k in ("app_label", "model_name", "field_name")
                    ]
                    object_id = ".".join(asked)[:64]
                audit_record(
                    user=request.user,
                    action=action,
                    targets=[AuditTarget(object_type=label, object_id=object_id, site_id=None)],
                    request=request,
                )
            return response

        audited.__name__ = name
        return cast(_View, super().admin_view(audited, cacheable))
