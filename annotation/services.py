"""Writes of the annotation workflow: campaigns, balanced assignment, readings, adjudication.

Readings and adjudications are append-only versions; masks go to the encrypted store as 1-bit
PNGs (``backend.scoring.masks``), one per type with any marked pixel.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from numpy.typing import NDArray

from annotation import agreement
from annotation.models import (
    Adjudication,
    Annotation,
    Assignment,
    AssignmentStatus,
    Campaign,
    CampaignSeries,
    CampaignStatus,
    MaskSource,
)
from annotation.selectors import (
    READER_ROLES,
    annotated_instance_ids,
    campaign_latest_readings,
    is_lead,
    series_for_campaign,
)
from backend.accounts.models import Membership, Role, User
from backend.accounts.selectors import AnyUser, site_ids_for
from backend.audit.exceptions import Refused
from backend.audit.mixins import audit_target_for, one_per_study
from backend.audit.models import AuditAction
from backend.audit.services import AuditTarget, audit_record
from backend.scoring.masks import mask_get, mask_put
from backend.scoring.models import ARTIFACT_TYPE_CHOICES
from backend.studies.models import Instance
from backend.studies.selectors import NotInScope

ARTIFACT_TYPES = [name for name, _ in ARTIFACT_TYPE_CHOICES]
Masks = Mapping[str, NDArray[np.generic]]


def _require_lead(user: AnyUser, site_id: int) -> None:
    if site_id not in site_ids_for(user):
        raise NotInScope("site", str(site_id), site_id)
    if not is_lead(user=user, site_id=site_id):
        raise Refused(
            "only the site's annotation leads may do this",
            target=AuditTarget("site", str(site_id), site_id),
        )


def campaign_readers(*, site_id: int, include_leads: bool = False) -> list[User]:
    """Who may read at the site: annotators and radiologists (and leads, when named)."""
    roles = READER_ROLES if include_leads else (Role.ANNOTATOR, Role.RADIOLOGIST)
    ids = Membership.objects.filter(site_id=site_id, role__in=[str(r) for r in roles]).values_list(
        "user_id", flat=True
    )
    return list(User.objects.filter(pk__in=ids, is_active=True).order_by("pk"))


@transaction.atomic
def campaign_create(
    *,
    user: User,
    site_id: int,
    name: str,
    artifact_types: Sequence[str],
    readers_per_image: int = 2,
    blinded: bool = True,
    deadline: dt.date | None = None,
    instructions: str = "",
    reader_ids: Sequence[int] | None = None,
    disagreement_iou: float = 0.5,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    protocol: str = "",
    index_below: float | None = None,
    model_disagreement: bool = False,
    series_ids: Sequence[uuid.UUID] | None = None,
) -> Campaign:
    """Create a campaign of the site's series matching the query and assign its readers."""
    _require_lead(user, site_id)
    unknown = sorted(set(artifact_types) - set(ARTIFACT_TYPES))
    if not artifact_types or unknown:
        raise ValidationError(f"artifact types must be among {ARTIFACT_TYPES}; got {unknown}")
    if not 1 <= readers_per_image <= 5:
        raise ValidationError("readers per image must be 1 to 5")
    query = {
        "date_from": date_from.isoformat() if date_from else None,
        "date_to": date_to.isoformat() if date_to else None,
        "protocol": protocol,
        "index_below": index_below,
        "model_disagreement": model_disagreement,
        "series_ids": [str(s) for s in series_ids] if series_ids is not None else None,
    }
    series = list(
        series_for_campaign(
            site_id=site_id,
            date_from=date_from,
            date_to=date_to,
            protocol=protocol,
            index_below=index_below,
            model_disagreement=model_disagreement,
            series_ids=list(series_ids) if series_ids is not None else None,
        )
    )
    if not series:
        raise ValidationError("no series of this site match the query")
    campaign = Campaign.objects.create(
        site_id=site_id,
        name=name,
        instructions=instructions,
        artifact_types=[t for t in ARTIFACT_TYPES if t in set(artifact_types)],
        readers_per_image=readers_per_image,
        blinded=blinded,
        deadline=deadline,
        query=query,
        disagreement_iou=disagreement_iou,
        created_by=user,
    )
    CampaignSeries.objects.bulk_create(
        CampaignSeries(campaign=campaign, series=s, site_id=site_id, position=i)
        for i, s in enumerate(series)
    )
    campaign_assign(campaign=campaign, reader_ids=reader_ids)
    return campaign


def campaign_assign(*, campaign: Campaign, reader_ids: Sequence[int] | None = None) -> int:
    """Give each series of the campaign that has no reader yet ``readers_per_image`` distinct
    readers, balancing the load: each series goes to the readers with the fewest series so far
    (ties: the one who waited longest). Only members of the campaign's site can be readers; by
    default the campaign's current readers, or the site's annotators and radiologists for a new
    campaign. Returns the number of assignments made."""
    existing = list(campaign.assignments.values_list("reader_id", "series_id"))
    pool = sorted(campaign.readers.values_list("pk", flat=True))
    # The campaign's own readers, when none are named: those who have left the site since (an
    # account closed, a membership ended) keep what they read but get nothing new.
    implicit = reader_ids is None and bool(pool)
    if implicit:
        reader_ids = pool
    readers = campaign_readers(site_id=campaign.site_id, include_leads=reader_ids is not None)
    if reader_ids is not None:
        allowed = {r.pk for r in readers}
        if not implicit and not set(reader_ids) <= allowed:
            raise ValidationError("every reader must read at the campaign's site")
        readers = [r for r in readers if r.pk in set(reader_ids)]
    if len(readers) < campaign.readers_per_image:
        raise ValidationError(
            f"{campaign.readers_per_image} readers per image need as many readers at the site; "
            f"{len(readers)} available"
        )
    load = {r.pk: 0 for r in readers}
    for reader, _ in existing:
        if reader in load:
            load[reader] += 1
    last = {r.pk: -1 for r in readers}
    assigned = {series for _, series in existing}
    rows = []
    for step, item in enumerate(campaign.items.order_by("position")):
        if item.series_id in assigned:
            continue
        chosen = sorted(load, key=lambda pk: (load[pk], last[pk], pk))[: campaign.readers_per_image]
        for pk in chosen:
            rows.append(
                Assignment(
                    campaign=campaign,
                    series_id=item.series_id,
                    site_id=campaign.site_id,
                    reader_id=pk,
                    position=load[pk],
                )
            )
            load[pk] += 1
            last[pk] = step
    Assignment.objects.bulk_create(rows)
    if not pool:
        campaign.readers.set(readers)
    return len(rows)


@transaction.atomic
def campaign_add_series(*, user: User, campaign: Campaign, series_ids: Sequence[uuid.UUID]) -> int:
    """Add more of the site's series (e.g. the active-learning suggestions) and assign them;
    returns the number of series added (those already in the campaign are left as they are)."""
    _require_lead(user, campaign.site_id)
    Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    have = set(campaign.items.values_list("series_id", flat=True))
    found = list(series_for_campaign(site_id=campaign.site_id, series_ids=list(series_ids)))
    if len(found) != len(set(series_ids)):
        raise ValidationError("every series must be one of the site's MR series with images")
    start = (campaign.items.aggregate(p=Max("position"))["p"] or -1) + 1
    new = [s for s in found if s.pk not in have]
    CampaignSeries.objects.bulk_create(
        CampaignSeries(campaign=campaign, series=s, site_id=campaign.site_id, position=start + i)
        for i, s in enumerate(new)
    )
    campaign_assign(campaign=campaign)
    return len(new)


def training_set_export_audit(
    *, user: User, campaign: Campaign, request: HttpRequest | None = None
) -> None:
    """The audit rows of a training-set export however it was asked for (the campaign page,
    the command; the API's view records the same through its mixin): one per study of the
    campaign, by the lead (security checklist L-01)."""
    audit_record(
        user=user,
        action=AuditAction.EXPORT,
        targets=one_per_study(
            audit_target_for(item.series) for item in campaign.items.select_related("series__study")
        ),
        request=request,
    )


def campaign_set_status(*, user: User, campaign: Campaign, status: str) -> Campaign:
    """Close a campaign (or open it again): a lead of its site only. A closed campaign takes no
    more readings and leaves its readers' queues, and its blinding ends — its readers see the
    model's results on those series again, as everyone else does. Audited."""
    _require_lead(user, campaign.site_id)
    if status not in CampaignStatus.values:
        raise ValidationError(f"a campaign is {' or '.join(CampaignStatus.values)}")
    Campaign.objects.filter(pk=campaign.pk).update(status=status)
    campaign.status = status
    audit_record(
        user=user,
        action=AuditAction.ANNOTATE,
        targets=[AuditTarget("campaign", str(campaign.pk), campaign.site_id)],
    )
    return campaign


def _assignment_target(assignment: Assignment) -> AuditTarget:
    return AuditTarget("assignment", str(assignment.pk), assignment.site_id)


def assignment_skip(*, user: User, assignment: Assignment, reason: str) -> Assignment:
    if assignment.reader_id != user.pk:
        raise Refused("only the reader skips their series", target=_assignment_target(assignment))
    if not reason.strip():
        raise ValidationError("say why the series is skipped")
    assignment.status = AssignmentStatus.SKIPPED
    assignment.skip_reason = reason.strip()[:300]
    assignment.finished_at = timezone.now()
    assignment.save(update_fields=["status", "skip_reason", "finished_at"])
    return assignment


def assignment_finish(*, user: User, assignment: Assignment) -> Assignment:
    if assignment.reader_id != user.pk:
        raise Refused(
            "only the reader finishes their series", target=_assignment_target(assignment)
        )
    assignment.status = AssignmentStatus.DONE
    assignment.finished_at = timezone.now()
    assignment.save(update_fields=["status", "finished_at"])
    return assignment


def _check_masks(
    masks: Masks, instance: Instance, types: Sequence[str]
) -> dict[str, NDArray[np.uint8]]:
    out = {}
    for name, mask in masks.items():
        if name not in types:
            raise ValidationError(f"{name} is not annotated in this campaign")
        array = np.asarray(mask, dtype=np.float64)
        if array.shape != (instance.rows, instance.columns):
            raise ValidationError(
                f"the {name} mask is {array.shape}, the image {instance.rows}x{instance.columns}"
            )
        if array.any():
            out[name] = (array > 0).astype(np.uint8)
    return out


def _types_present(
    named: Sequence[str] | None, masks: Mapping[str, object], types: Sequence[str]
) -> list[str]:
    """The types named present plus those with a mask, in canonical order; a type the campaign
    does not annotate (or no type at all) is a ValidationError, checked before it is ordered."""
    present = set(named or []) | set(masks)
    if present - set(types):
        raise ValidationError("types present must be among the campaign's types")
    return sorted(present, key=ARTIFACT_TYPES.index)


def _store_masks(
    prefix: str, masks: dict[str, NDArray[np.uint8]]
) -> tuple[dict[str, str], dict[str, int]]:
    keys, pixels = {}, {}
    for name, mask in masks.items():
        keys[name] = f"{prefix}/{name}.png"
        mask_put(keys[name], mask)
        pixels[name] = int(mask.sum())
    return keys, pixels


def _next_version(versions: QuerySet[Any]) -> int:
    # Callers hold the row lock of what is versioned (assignment, campaign), so two saves
    # cannot take the same number; the unique constraint would refuse it anyway.
    return int(versions.aggregate(v=Max("version"))["v"] or 0) + 1


def stored_masks(
    keys: Mapping[str, str], shape: tuple[int, int], types: Sequence[str]
) -> dict[str, NDArray[np.uint8]]:
    """Every type's mask (zeros for types with no stored mask)."""
    return {
        name: mask_get(keys[name]) if name in keys else np.zeros(shape, np.uint8) for name in types
    }


@transaction.atomic
def annotation_save(
    *,
    user: User,
    assignment: Assignment,
    instance_id: uuid.UUID | str,
    masks: Masks,
    types_present: Sequence[str] | None = None,
    diagnostic: bool | None = None,
    confidence: int | None = None,
    source: str = MaskSource.EMPTY,
    time_spent_ms: int = 0,
) -> Annotation:
    """Save a new version of the reader's reading of one slice of their assigned series."""
    if assignment.reader_id != user.pk:
        raise Refused(
            "only the assigned reader annotates this series",
            target=_assignment_target(assignment),
        )
    assignment = (
        Assignment.objects.select_for_update().select_related("campaign").get(pk=assignment.pk)
    )
    if assignment.status == AssignmentStatus.SKIPPED:
        raise ValidationError("this series was skipped")
    if assignment.campaign.status != CampaignStatus.ACTIVE:
        raise ValidationError("this campaign is closed")
    instance = Instance.objects.filter(pk=instance_id, series_id=assignment.series_id).first()
    if instance is None:
        raise NotInScope("instance", str(instance_id)[:64], assignment.site_id)
    types = assignment.campaign.artifact_types
    clean = _check_masks(masks, instance, types)
    present = _types_present(types_present, clean, types)
    if confidence is not None and not 1 <= confidence <= 5:
        raise ValidationError("confidence is 1 to 5")
    if source not in MaskSource.values or source in (
        MaskSource.PICK,
        MaskSource.MAJORITY,
        MaskSource.STAPLE,
        MaskSource.REDRAW,
    ):
        raise ValidationError(f"unknown source {source!r}")
    annotation = Annotation.objects.create(
        assignment=assignment,
        instance=instance,
        site_id=assignment.site_id,
        version=_next_version(Annotation.objects.filter(assignment=assignment, instance=instance)),
        types_present=present,
        diagnostic=diagnostic,
        confidence=confidence,
        source=source,
        time_spent_ms=max(0, min(int(time_spent_ms), 24 * 3600 * 1000)),
        created_by=user,
    )
    prefix = f"annotations/{assignment.site_id}/{assignment.campaign_id}/{annotation.pk}"
    annotation.masks, annotation.mask_pixels = _store_masks(prefix, clean)
    annotation.save(update_fields=["masks", "mask_pixels"])
    now = timezone.now()
    assignment.last_instance = instance
    if assignment.status == AssignmentStatus.PENDING:
        assignment.status = AssignmentStatus.IN_PROGRESS
        assignment.started_at = now
    if assignment.status == AssignmentStatus.IN_PROGRESS:
        done = annotated_instance_ids(assignment=assignment)
        if len(done) >= assignment.series.instances.count():
            assignment.status = AssignmentStatus.DONE
            assignment.finished_at = now
    assignment.save(update_fields=["last_instance", "status", "started_at", "finished_at"])
    return annotation


def readings_masks(
    readings: Sequence[Annotation], types: Sequence[str]
) -> list[dict[str, NDArray[np.uint8]]]:
    return [stored_masks(a.masks, (a.instance.rows, a.instance.columns), types) for a in readings]


def readings_disagree(
    readings: Sequence[Annotation], types: Sequence[str], threshold: float
) -> list[str]:
    """Why these readings of one slice disagree (empty when they agree): a type whose masks'
    IoU is below ``threshold`` for some pair, a type one reader says is present and another
    not (a reader may tick a type without painting it: "motion present"), or different
    diagnostic labels."""
    reasons = []
    labels = {a.diagnostic for a in readings if a.diagnostic is not None}
    if len(labels) > 1:
        reasons.append("diagnostic label")
    masks = readings_masks(readings, types)
    for name in types:
        if any(
            agreement.masks_disagree(masks[i][name], masks[j][name], threshold)
            for i in range(len(masks))
            for j in range(i + 1, len(masks))
        ):
            reasons.append(name)
        elif len({name in (a.types_present or []) for a in readings}) > 1:
            reasons.append(f"{name} present")
    return reasons


def disagreements(*, campaign: Campaign) -> list[dict[str, object]]:
    """Slices read by two or more readers who disagree, with whether they were adjudicated."""
    adjudicated = set(
        str(i)
        for i in Adjudication.objects.filter(campaign=campaign).values_list(
            "instance_id", flat=True
        )
    )
    out: list[dict[str, object]] = []
    for instance_id, readings in campaign_latest_readings(campaign=campaign).items():
        if len(readings) < 2:
            continue
        reasons = readings_disagree(readings, campaign.artifact_types, campaign.disagreement_iou)
        if reasons:
            instance = readings[0].instance
            out.append(
                {
                    "instance_id": instance_id,
                    "series_id": str(instance.series_id),
                    "instance_number": instance.instance_number,
                    "readers": [a.assignment.reader.get_username() for a in readings],
                    "reasons": reasons,
                    "adjudicated": instance_id in adjudicated,
                }
            )
    out.sort(key=lambda d: (bool(d["adjudicated"]), str(d["series_id"]), d["instance_number"] or 0))
    return out


@transaction.atomic
def adjudication_save(
    *,
    user: User,
    campaign: Campaign,
    instance_id: uuid.UUID | str,
    method: str,
    annotation_id: int | None = None,
    masks: Masks | None = None,
    diagnostic: bool | None = None,
    types_present: Sequence[str] | None = None,
) -> Adjudication:
    """The campaign's answer for a slice: one reader's reading (``pick``), the readers' majority
    vote or STAPLE estimate per type, or masks the adjudicator drew (``redraw``)."""
    _require_lead(user, campaign.site_id)
    Campaign.objects.select_for_update().filter(pk=campaign.pk).first()  # versions in order
    readings = campaign_latest_readings(campaign=campaign).get(str(instance_id), [])
    if not readings:
        raise ValidationError("no reader has read this slice")
    instance = readings[0].instance
    types = campaign.artifact_types
    picked = None
    if method == MaskSource.PICK:
        picked = next((a for a in readings if a.pk == annotation_id), None)
        if picked is None:
            raise ValidationError("pick one of this slice's readings")
        fused = readings_masks([picked], types)[0]
        diagnostic = picked.diagnostic if diagnostic is None else diagnostic
    elif method in (MaskSource.MAJORITY, MaskSource.STAPLE):
        all_masks = readings_masks(readings, types)
        fuse = (
            agreement.majority_vote
            if method == MaskSource.MAJORITY
            else (lambda ms: agreement.staple(ms)[0])
        )
        fused = {name: fuse([m[name] for m in all_masks]) for name in types}
        if diagnostic is None:
            votes = [a.diagnostic for a in readings if a.diagnostic is not None]
            diagnostic = (sum(votes) * 2 > len(votes)) if votes else None
    elif method == MaskSource.REDRAW:
        if masks is None:
            raise ValidationError("redraw needs the masks")
        fused = _check_masks(masks, instance, types)
    else:
        raise ValidationError(f"unknown method {method!r}")
    clean = _check_masks(fused, instance, types)
    present = _types_present(types_present, clean, types)
    adjudication = Adjudication.objects.create(
        campaign=campaign,
        instance=instance,
        site_id=campaign.site_id,
        version=_next_version(Adjudication.objects.filter(campaign=campaign, instance=instance)),
        method=method,
        picked=picked,
        types_present=present,
        diagnostic=diagnostic,
        adjudicator=user,
    )
    prefix = f"annotations/{campaign.site_id}/{campaign.pk}/adjudication-{adjudication.pk}"
    adjudication.masks, adjudication.mask_pixels = _store_masks(prefix, clean)
    adjudication.save(update_fields=["masks", "mask_pixels"])
    return adjudication


def consensus(
    *, campaign: Campaign
) -> list[tuple[Instance, dict[str, NDArray[np.uint8]], bool | None]]:
    """What the campaign says per slice, for training: the latest adjudication, else the readers'
    majority where they agree (one reader: their reading). Left out: disagreements not yet
    adjudicated, and slices whose readers have not all finished their series (a missing second
    reading, or an autosave of a reader still painting, is not ground truth yet); a reader who
    skipped the series does not count."""
    from annotation.selectors import adjudications_latest

    types = campaign.artifact_types
    adjudicated = adjudications_latest(campaign=campaign)
    # Readers still at the site: one who has left (account closed, membership ended) cannot
    # finish or skip any more, and must not hold their series back for good.
    present = {r.pk for r in campaign_readers(site_id=campaign.site_id, include_leads=True)}
    readers_of: dict[uuid.UUID, list[Assignment]] = defaultdict(list)
    for assignment in Assignment.objects.filter(campaign=campaign).exclude(
        status=AssignmentStatus.SKIPPED
    ):
        if assignment.reader_id in present:
            readers_of[assignment.series_id].append(assignment)
    out = []
    for instance_id, readings in campaign_latest_readings(campaign=campaign).items():
        instance = readings[0].instance
        shape = (instance.rows, instance.columns)
        if instance_id in adjudicated:
            adj = adjudicated[instance_id]
            out.append((instance, stored_masks(adj.masks, shape, types), adj.diagnostic))
            continue
        assigned = readers_of[instance.series_id]
        # A reader who has left counts with what they finished, not with a half-done series.
        readings = [
            a
            for a in readings
            if a.assignment.reader_id in present or a.assignment.status == AssignmentStatus.DONE
        ]
        if (
            not readings
            or len(readings) < len(assigned)
            or any(a.status != AssignmentStatus.DONE for a in assigned)
        ):
            continue
        if readings_disagree(readings, types, campaign.disagreement_iou):
            continue
        masks = readings_masks(readings, types)
        fused = {name: agreement.majority_vote([m[name] for m in masks]) for name in types}
        votes = [a.diagnostic for a in readings if a.diagnostic is not None]
        out.append((instance, fused, (sum(votes) * 2 > len(votes)) if votes else None))
    out.sort(key=lambda row: (str(row[0].series_id), row[0].instance_number or 0))
    return out
