"""Pages: the campaigns list and form, a campaign's lead page, the reader's queue, the annotate
page and the adjudication page. Forms post back to the page, which calls one service."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache

from annotation import reports, selectors, services, training
from annotation.models import CampaignStatus, JobStatus
from backend.accounts.models import Site, User
from backend.audit.exceptions import Refused
from backend.audit.models import AuditAction
from backend.audit.services import AuditTarget, audit_record, denied_record
from backend.scoring.models import ARTIFACT_TYPE_CHOICES
from backend.studies.selectors import NotInScope


def page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Signed in, never cached; another site's object is an audited 404."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except NotInScope as missing:
            denied_record(
                user=request.user,
                action=AuditAction.VIEW,
                target=AuditTarget(missing.object_type, missing.object_id, missing.site_id),
                request=request,
            )
            raise Http404("Not found") from None
        except Refused as refused:  # a 403 on the caller's own site: audited the same way
            denied_record(
                user=request.user, action=AuditAction.VIEW, target=refused.target, request=request
            )
            raise

    return login_required(never_cache(wrapper))


def _date(value: str | None) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


@page
def campaign_list_page(request: HttpRequest) -> HttpResponse:
    lead_sites = Site.objects.filter(id__in=selectors.lead_site_ids(user=request.user))
    if request.method == "POST":
        form = request.POST
        try:
            ids = [uuid.UUID(s) for s in form.get("series_ids", "").split()] or None
            campaign = services.campaign_create(
                user=cast(User, request.user),
                site_id=int(form.get("site_id", "0")),
                name=form.get("name", "").strip() or "Campaign",
                artifact_types=form.getlist("artifact_types"),
                readers_per_image=int(form.get("readers_per_image", "2")),
                blinded=form.get("blinded") == "on",
                deadline=_date(form.get("deadline")),
                instructions=form.get("instructions", ""),
                date_from=_date(form.get("date_from")),
                date_to=_date(form.get("date_to")),
                protocol=form.get("protocol", ""),
                index_below=float(form["index_below"]) if form.get("index_below") else None,
                model_disagreement=form.get("model_disagreement") == "on",
                series_ids=ids,
            )
            return redirect("campaign", campaign_id=campaign.pk)
        except (ValidationError, ValueError) as exc:
            messages.error(request, "; ".join(getattr(exc, "messages", [str(exc)])))
    return render(
        request,
        "annotation/campaigns.html",
        {
            "campaigns": selectors.campaign_list(user=request.user),
            "lead_sites": lead_sites,
            "types": ARTIFACT_TYPE_CHOICES,
        },
    )


@page
def campaign_page(request: HttpRequest, campaign_id: uuid.UUID) -> HttpResponse:
    campaign = selectors.campaign_get(user=request.user, campaign_id=campaign_id)
    if not selectors.is_lead(user=request.user, site_id=campaign.site_id):
        return redirect("annotate-queue")
    user = cast(User, request.user)
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "export":
                training.training_set_export(
                    user=user,
                    campaign=campaign,
                    simulated_ratio=float(request.POST.get("simulated_ratio") or 0) / 100.0,
                    seed=int(request.POST.get("seed") or 0),
                )
                services.training_set_export_audit(user=user, campaign=campaign, request=request)
            elif action == "finetune":
                ts = selectors.training_set_get(
                    user=user, training_set_id=request.POST.get("training_set", "")
                )
                training.finetune_request(
                    user=user,
                    training_set=ts,
                    epochs=int(request.POST.get("epochs") or 3),
                    steps=int(request.POST.get("steps") or 20),
                    crop=int(request.POST.get("crop") or 128),
                )
            elif action == "promote":
                job = selectors.finetune_get(
                    user=user, finetune_id=request.POST.get("finetune", "")
                )
                training.finetune_promote(
                    user=user,
                    finetune=job,
                    reason=request.POST.get("reason", ""),
                    rescore=request.POST.get("rescore") == "on",
                )
            elif action == "add_series":
                services.campaign_add_series(
                    user=user,
                    campaign=campaign,
                    series_ids=[uuid.UUID(s) for s in request.POST.getlist("series")],
                )
            elif action in ("close", "reopen"):
                services.campaign_set_status(
                    user=user,
                    campaign=campaign,
                    status=CampaignStatus.CLOSED if action == "close" else CampaignStatus.ACTIVE,
                )
            elif action == "rollback":
                training.model_rollback_by_lead(
                    user=user,
                    site_id=campaign.site_id,
                    reason=request.POST.get("reason", ""),
                )
            return redirect("campaign", campaign_id=campaign.pk)
        except (ValidationError, ValueError, PermissionDenied) as exc:
            if isinstance(exc, Refused):
                denied_record(
                    user=request.user,
                    action=AuditAction.ANNOTATE,
                    target=exc.target,
                    request=request,
                )
            messages.error(request, "; ".join(getattr(exc, "messages", [str(exc)])))
    finetunes = list(selectors.finetune_list(campaign=campaign))
    return render(
        request,
        "annotation/campaign.html",
        {
            "campaign": campaign,
            "readers": _reader_progress(campaign),
            "disagreements": services.disagreements(campaign=campaign),
            "agreement": reports.campaign_agreement(campaign=campaign),
            "training_sets": selectors.training_set_list(campaign=campaign),
            "finetunes": finetunes,
            "running": any(j.status in (JobStatus.QUEUED, JobStatus.RUNNING) for j in finetunes),
            "suggestions": reports.active_learning_suggest(campaign=campaign),
        },
    )


def _reader_progress(campaign: Any) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for a in campaign.assignments.select_related("reader").order_by("reader__username"):
        row = rows.setdefault(
            a.reader.get_username(),
            {"reader": a.reader.get_username(), "done": 0, "skipped": 0, "total": 0},
        )
        row["total"] += 1
        row["done"] += a.status == "done"
        row["skipped"] += a.status == "skipped"
    return list(rows.values())


@page
def adjudicate_page(
    request: HttpRequest, campaign_id: uuid.UUID, instance_id: uuid.UUID
) -> HttpResponse:
    campaign = selectors.campaign_get_for_lead(user=request.user, campaign_id=campaign_id)
    readings = selectors.campaign_latest_readings(campaign=campaign).get(str(instance_id))
    if not readings:
        raise NotInScope("instance", str(instance_id), campaign.site_id)
    instance = readings[0].instance
    series = instance.series
    return render(
        request,
        "annotation/annotate.html",
        {
            "mode": "adjudicate",
            "campaign": campaign,
            "series": series,
            "instance": instance,
        },
    )


@page
def queue_page(request: HttpRequest) -> HttpResponse:
    queue = selectors.reader_queue(user=request.user)
    return render(
        request,
        "annotation/queue.html",
        {
            "assignments": queue,
            "progress": selectors.queue_progress(assignments=queue),
            "next": selectors.queue_next(assignments=queue),
        },
    )


@page
def annotate_page(request: HttpRequest, assignment_id: uuid.UUID) -> HttpResponse:
    assignment = selectors.assignment_get(user=request.user, assignment_id=assignment_id)
    audit_record(
        user=request.user,
        action=AuditAction.VIEW,
        targets=[
            AuditTarget(
                "series",
                str(assignment.series_id),
                assignment.site_id,
                assignment.series.study.study_uid,
            )
        ],
        request=request,
    )
    return render(
        request,
        "annotation/annotate.html",
        {
            "mode": "annotate",
            "assignment": assignment,
            "campaign": assignment.campaign,
            "series": assignment.series,
        },
    )
