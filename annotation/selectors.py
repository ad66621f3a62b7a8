"""Reads of campaigns, assignments and readings, scoped like the clinical data.

A campaign of another site is a 404 (``NotInScope``), as is another reader's assignment: a
reader only ever sees their own queue. Leads (``Role.ANNOTATION_LEAD`` at the campaign's site,
or a superuser) see the whole campaign.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict

from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from annotation.models import (
    Adjudication,
    Annotation,
    Assignment,
    AssignmentStatus,
    Campaign,
    CampaignSeries,
    CampaignStatus,
    FineTune,
    TrainingSet,
)
from backend.accounts.models import Role
from backend.accounts.selectors import AnyUser, site_ids_for, site_ids_with_role, user_has_role
from backend.audit.exceptions import Refused
from backend.audit.services import AuditTarget
from backend.scoring.models import Finding, InstanceScore, ScoringRun
from backend.studies.models import Instance, Series
from backend.studies.selectors import NotInScope, _get, _scoped

LEAD_ROLES = (Role.ANNOTATION_LEAD,)
READER_ROLES = (Role.ANNOTATOR, Role.RADIOLOGIST, Role.ANNOTATION_LEAD)


def is_lead(*, user: AnyUser, site_id: int) -> bool:
    return user_has_role(user=user, site_id=site_id, roles=LEAD_ROLES)


def lead_site_ids(*, user: AnyUser) -> set[int]:
    return site_ids_with_role(user=user, roles=LEAD_ROLES)


def campaign_list(*, user: AnyUser) -> QuerySet[Campaign]:
    """Campaigns a lead runs (all of their sites) plus those the user reads in."""
    leads = lead_site_ids(user=user)
    qs = _scoped(Campaign.objects.select_related("site"), user)
    if user.is_authenticated and not user.is_superuser:
        mine = Assignment.objects.filter(campaign=OuterRef("pk"), reader_id=user.pk)
        qs = qs.filter(Q(site_id__in=leads) | Exists(mine))
    series = (
        CampaignSeries.objects.filter(campaign=OuterRef("pk"))
        .order_by()
        .values("campaign")
        .annotate(n=Count("id"))
        .values("n")
    )
    return qs.annotate(series_count=Coalesce(Subquery(series), 0)).order_by("-created_at")


def campaign_reader_progress(
    *, campaign_ids: list[uuid.UUID]
) -> dict[uuid.UUID, dict[str, dict[str, int]]]:
    """campaign → reader's username → series finished (done or skipped), skipped, total; in one
    grouped query for any number of campaigns."""
    out: dict[uuid.UUID, dict[str, dict[str, int]]] = {c: {} for c in campaign_ids}
    rows = (
        Assignment.objects.filter(campaign_id__in=campaign_ids)
        .order_by()
        .values_list("campaign_id", "reader__username", "status")
        .annotate(n=Count("id"))
    )
    for campaign_id, username, state, n in rows:
        row = out[campaign_id].setdefault(username, {"finished": 0, "total": 0, "skipped": 0})
        row["total"] += n
        if state in (AssignmentStatus.DONE, AssignmentStatus.SKIPPED):
            row["finished"] += n
        if state == AssignmentStatus.SKIPPED:
            row["skipped"] += n
    return out


def campaign_get(*, user: AnyUser, campaign_id: uuid.UUID | str) -> Campaign:
    """Any campaign of the user's sites (readers learn its name and instructions)."""
    return _get(_scoped(Campaign.objects.select_related("site"), user), "campaign", campaign_id)


def campaign_get_for_lead(*, user: AnyUser, campaign_id: uuid.UUID | str) -> Campaign:
    campaign = campaign_get(user=user, campaign_id=campaign_id)
    if not is_lead(user=user, site_id=campaign.site_id):
        raise Refused(
            "only the campaign's annotation leads may do this",
            target=AuditTarget("campaign", str(campaign.pk), campaign.site_id),
        )
    return campaign


def assignment_get(*, user: AnyUser, assignment_id: uuid.UUID | str) -> Assignment:
    """The user's own assignment, or any of a campaign they lead; otherwise a 404."""
    qs = _scoped(
        Assignment.objects.select_related("campaign", "series__study", "reader", "site"), user
    )
    if user.is_authenticated and not user.is_superuser:
        qs = qs.filter(Q(reader=user) | Q(site_id__in=lead_site_ids(user=user)))
    return _get(qs, "assignment", assignment_id)


def reader_queue(
    *, user: AnyUser, campaign_id: uuid.UUID | str | None = None
) -> QuerySet[Assignment]:
    qs = Assignment.objects.filter(
        reader_id=user.pk, site_id__in=site_ids_for(user), campaign__status=CampaignStatus.ACTIVE
    )
    if campaign_id is not None:
        qs = qs.filter(campaign_id=campaign_id)
    return qs.select_related("campaign", "series__study").order_by(
        "campaign__created_at", "position"
    )


def queue_progress(*, assignments: QuerySet[Assignment]) -> dict[str, int]:
    """ "37 of 120": series finished (done or skipped) of those assigned."""
    counts = assignments.aggregate(
        total=Count("id"),
        finished=Count(
            "id", filter=Q(status__in=[AssignmentStatus.DONE, AssignmentStatus.SKIPPED])
        ),
    )
    return {"finished": counts["finished"] or 0, "total": counts["total"] or 0}


def queue_next(*, assignments: QuerySet[Assignment]) -> Assignment | None:
    """Where to resume: the series in progress, else the next one to do."""
    return (
        assignments.filter(status=AssignmentStatus.IN_PROGRESS).first()
        or assignments.filter(status=AssignmentStatus.PENDING).first()
    )


def series_instances(*, series: Series) -> list[Instance]:
    return list(
        series.instances.select_related("series__study").order_by("instance_number", "sop_uid")
    )


def annotation_latest(*, assignment: Assignment, instance_id: uuid.UUID | str) -> Annotation | None:
    return (
        Annotation.objects.filter(assignment=assignment, instance_id=instance_id)
        .order_by("-version")
        .first()
    )


def annotation_versions(
    *, assignment: Assignment, instance_id: uuid.UUID | str
) -> QuerySet[Annotation]:
    return Annotation.objects.filter(assignment=assignment, instance_id=instance_id).order_by(
        "-version"
    )


def annotated_instance_ids(*, assignment: Assignment) -> set[str]:
    return {
        str(i)
        for i in Annotation.objects.filter(assignment=assignment).values_list(
            "instance_id", flat=True
        )
    }


def campaign_latest_readings(*, campaign: Campaign) -> dict[str, list[Annotation]]:
    """instance id → the latest version of each reader's reading of it (skipped series left out),
    in one query whatever the number of versions autosave wrote."""
    newest = (
        Annotation.objects.filter(assignment=OuterRef("assignment"), instance=OuterRef("instance"))
        .order_by("-version")
        .values("version")[:1]
    )
    by_instance: dict[str, list[Annotation]] = defaultdict(list)
    for ann in (
        Annotation.objects.filter(assignment__campaign=campaign, version=Subquery(newest))
        .exclude(assignment__status=AssignmentStatus.SKIPPED)
        .select_related("assignment__reader", "instance")
        .order_by("assignment__reader_id")
    ):
        by_instance[str(ann.instance_id)].append(ann)
    return by_instance


def adjudication_latest(*, campaign: Campaign, instance_id: uuid.UUID | str) -> Adjudication | None:
    return (
        Adjudication.objects.filter(campaign=campaign, instance_id=instance_id)
        .order_by("-version")
        .first()
    )


def adjudications_latest(*, campaign: Campaign) -> dict[str, Adjudication]:
    out: dict[str, Adjudication] = {}
    for adj in Adjudication.objects.filter(campaign=campaign).order_by("version"):
        out[str(adj.instance_id)] = adj
    return out


def model_findings(*, instance: Instance, types: list[str]) -> list[Finding]:
    """The model's findings on ``instance`` from its series' current scoring run (on its first
    frame: an annotation item is an instance, drawn on frame 1)."""
    run_id = instance.series.current_run_id
    if run_id is None:
        return []
    return list(
        Finding.objects.filter(run_id=run_id, instance=instance, frame=1, artifact_type__in=types)
    )


def model_scores(*, series_ids: list[uuid.UUID]) -> dict[str, InstanceScore]:
    """instance id → its score in its series' current run (its first frame's, as
    :func:`model_findings`)."""
    runs = Series.objects.filter(pk__in=series_ids).values_list("current_run_id", flat=True)
    return {
        str(s.instance_id): s
        for s in InstanceScore.objects.filter(
            run_id__in=[r for r in runs if r is not None], frame=1
        )
    }


def series_for_campaign(
    *,
    site_id: int,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    protocol: str = "",
    index_below: float | None = None,
    model_disagreement: bool = False,
    series_ids: list[uuid.UUID] | None = None,
) -> QuerySet[Series]:
    """A site's MR series with images, filtered by the campaign's query.

    ``index_below``: series suitability index (0–100) under this value. ``model_disagreement``:
    series scored by two model versions that disagree on whether the series is diagnostic.
    """
    qs = Series.objects.filter(site_id=site_id, modality="MR", instance_count__gt=0)
    if series_ids is not None:
        qs = qs.filter(pk__in=series_ids)
    if date_from is not None:
        qs = qs.filter(received_at__date__gte=date_from)
    if date_to is not None:
        qs = qs.filter(received_at__date__lte=date_to)
    if protocol:
        qs = qs.filter(protocol__icontains=protocol)
    if index_below is not None:
        qs = qs.filter(suitability__lt=index_below / 100.0)
    if model_disagreement:
        split = (
            ScoringRun.objects.filter(site_id=site_id, nondiagnostic__isnull=False)
            .values("series_id")
            .annotate(yes=Count("id", filter=Q(nondiagnostic=True)), n=Count("id"))
            .filter(yes__gt=0)
            .exclude(yes=F("n"))  # some runs, not all, say non-diagnostic
        )
        qs = qs.filter(pk__in=[row["series_id"] for row in split])
    return qs.order_by("received_at", "id")


def training_set_list(*, campaign: Campaign) -> QuerySet[TrainingSet]:
    return TrainingSet.objects.filter(campaign=campaign).order_by("-version")


def training_set_get(*, user: AnyUser, training_set_id: uuid.UUID | str) -> TrainingSet:
    ts = _get(
        _scoped(TrainingSet.objects.select_related("campaign"), user),
        "training set",
        training_set_id,
    )
    if not is_lead(user=user, site_id=ts.site_id):
        raise Refused(
            "only annotation leads may use training sets",
            target=AuditTarget("training_set", str(ts.pk), ts.site_id),
        )
    return ts


def finetune_list(*, campaign: Campaign) -> QuerySet[FineTune]:
    return (
        FineTune.objects.filter(training_set__campaign=campaign)
        .select_related("base_model", "candidate")
        .order_by("-created_at")
    )


def finetune_get(*, user: AnyUser, finetune_id: uuid.UUID | str) -> FineTune:
    job = _get(
        _scoped(FineTune.objects.select_related("training_set__campaign", "candidate"), user),
        "fine-tune",
        finetune_id,
    )
    if not is_lead(user=user, site_id=job.site_id):
        raise Refused(
            "only annotation leads may see fine-tuning runs",
            target=AuditTarget("finetune", str(job.pk), job.site_id),
        )
    return job


__all__ = ["NotInScope"]
