import uuid
from typing import cast

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from backend.accounts.models import Membership, User
from backend.accounts.selectors import (
    SENDING_ROLES,
    site_ids_with_role,
    site_list,
    user_has_role,
)
from backend.audit.mixins import audit_target_for
from backend.audit.models import AuditAction, AuditOutcome
from backend.audit.services import AuditTarget, audit_record
from backend.storage.store import StoreFull, store_space_check
from backend.studies.selectors import NotInScope, series_get


@login_required
@never_cache
def home(request: HttpRequest) -> HttpResponse:
    memberships = Membership.objects.filter(user=cast(User, request.user)).select_related("site")
    memberships = memberships.order_by("site__name", "role")
    return render(request, "web/home.html", {"memberships": memberships})


def health(request: HttpRequest) -> JsonResponse:
    """200 while the process serves; 503 while the image store is below its free-space floor
    (ingest is turned away then), so a monitor or a load balancer sees it."""
    try:
        store_space_check(log=False)  # polled: ingest logs it when it turns files away
    except StoreFull as full:
        return JsonResponse({"status": "degraded", "store": str(full)}, status=503)
    return JsonResponse({"status": "ok"})


@login_required
@never_cache
def upload(request: HttpRequest) -> HttpResponse:
    sites = site_list(user=request.user).filter(
        id__in=site_ids_with_role(user=request.user, roles=SENDING_ROLES)
    )
    return render(request, "web/upload.html", {"sites": sites})


@login_required
@never_cache
def series_viewer(request: HttpRequest, series_id: uuid.UUID) -> HttpResponse:
    """The viewer page of one series; another site's series is a 404 like a missing one."""
    try:
        series = series_get(user=request.user, series_id=series_id)
    except NotInScope as missing:
        audit_record(
            user=request.user,
            action=AuditAction.VIEW,
            targets=[AuditTarget(missing.object_type, missing.object_id, missing.site_id)],
            outcome=AuditOutcome.DENIED,
            request=request,
        )
        raise Http404("No such series") from None
    audit_record(
        user=request.user,
        action=AuditAction.VIEW,
        targets=[audit_target_for(series)],
        request=request,
    )
    from backend.review.services import REVIEWER_ROLES

    can_review = user_has_role(user=request.user, site_id=series.site_id, roles=REVIEWER_ROLES)
    # The slice the viewer opens on (the middle one in InstanceNumber order, as the viewer sorts
    # the metadata): the page asks for its frame before any script has loaded.
    sops = list(
        series.instances.order_by("instance_number", "sop_uid").values_list("sop_uid", flat=True)
    )
    middle_sop = sops[len(sops) // 2] if sops else ""
    return render(
        request,
        "web/viewer.html",
        {"series": series, "can_review": can_review, "middle_sop": middle_sop},
    )
