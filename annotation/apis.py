"""The annotation REST API (/api/campaigns/…, /api/assignments/…, /api/annotate/…).

Views parse and format; services and selectors decide. Another site's campaign and another
reader's assignment are 404s; a reader asking for lead-only data is a 403; a blinded reader
asking for the model's masks is a 403. Reads of slice masks are audited per instance.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from annotation import reports, selectors, services, training
from annotation.assist import keep_hinted
from annotation.models import (
    Annotation,
    Assignment,
    Campaign,
    CampaignStatus,
    FineTune,
    MaskSource,
    TrainingSet,
)
from annotation.rle import MaskFormatError, rle_decode, rle_encode
from backend.accounts.models import User
from backend.audit.mixins import ClinicalAPIView
from backend.audit.models import AuditAction
from backend.scoring.selectors import model_results_blinded
from backend.scoring.services import ModelRegistryError
from backend.studies.models import Instance, Series
from backend.studies.selectors import NotInScope


def _user(request: Request) -> User:
    # Every view here needs authentication (the default permission class).
    return cast(User, request.user)


class AnnotationApi(ClinicalAPIView):
    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, DjangoValidationError):
            exc = exceptions.ValidationError({"detail": exc.messages})
        if isinstance(exc, (MaskFormatError, ModelRegistryError)):
            exc = exceptions.ValidationError({"detail": [str(exc)]})
        return super().handle_exception(exc)


# --- formatting ---------------------------------------------------------------------------


def campaign_out(
    campaign: Campaign, *, lead: bool, readers: dict[str, dict[str, int]] | None = None
) -> dict[str, Any]:
    """``readers``: the per-reader progress of a lead's campaign when the caller already has it
    (a list computes all of them in one query)."""
    series = getattr(campaign, "series_count", None)
    data: dict[str, Any] = {
        "id": str(campaign.pk),
        "site_id": campaign.site_id,
        "name": campaign.name,
        "instructions": campaign.instructions,
        "artifact_types": campaign.artifact_types,
        "readers_per_image": campaign.readers_per_image,
        "blinded": campaign.blinded,
        "deadline": campaign.deadline.isoformat() if campaign.deadline else None,
        "status": campaign.status,
        "series": campaign.items.count() if series is None else series,
    }
    if lead:
        data["query"] = campaign.query
        data["disagreement_iou"] = campaign.disagreement_iou
        if readers is None:
            readers = selectors.campaign_reader_progress(campaign_ids=[campaign.pk])[campaign.pk]
        data["readers"] = readers
    return data


def assignment_out(a: Assignment) -> dict[str, Any]:
    return {
        "id": str(a.pk),
        "campaign_id": str(a.campaign_id),
        "campaign": a.campaign.name,
        "series_id": str(a.series_id),
        "series": f"{a.series.series_number or ''} {a.series.description}".strip(),
        "status": a.status,
        "skip_reason": a.skip_reason,
        "position": a.position,
        "url": f"/annotate/{a.pk}/",
    }


def annotation_out(ann: Annotation | None, types: list[str], instance: Instance) -> dict[str, Any]:
    if ann is None:
        return {
            "version": 0,
            "masks": {},
            "types_present": [],
            "diagnostic": None,
            "confidence": None,
        }
    masks = services.stored_masks(ann.masks, (instance.rows, instance.columns), list(ann.masks))
    return {
        "id": ann.pk,
        "version": ann.version,
        "masks": {name: rle_encode(m) for name, m in masks.items() if name in types},
        "mask_pixels": ann.mask_pixels,
        "types_present": ann.types_present,
        "diagnostic": ann.diagnostic,
        "confidence": ann.confidence,
        "source": ann.source,
        "created_at": ann.created_at.isoformat(),
        "created_by": ann.created_by.get_username(),
        "time_spent_ms": ann.time_spent_ms,
    }


def _decode_masks(raw: dict[str, Any], instance: Instance) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise MaskFormatError("masks: an object of type → run lengths")
    return {str(k): rle_decode(v, (instance.rows, instance.columns)) for k, v in raw.items()}


def _series_of(series_ids: list[str]) -> list[Series]:
    """The series named in a lead's list (one query), for its audit rows."""
    return list(Series.objects.select_related("study").filter(pk__in=set(series_ids)))


def _instance_of(assignment: Assignment, instance_id: uuid.UUID) -> Instance:
    instance = (
        Instance.objects.select_related("series__study")
        .filter(pk=instance_id, series_id=assignment.series_id)
        .first()
    )
    if instance is None:
        raise NotInScope("instance", str(instance_id), assignment.site_id)
    return instance


# --- campaigns ----------------------------------------------------------------------------


class CampaignCreateInput(serializers.Serializer):
    site_id = serializers.IntegerField()
    name = serializers.CharField(max_length=200)
    artifact_types = serializers.ListField(child=serializers.CharField(), min_length=1)
    readers_per_image = serializers.IntegerField(min_value=1, max_value=5, default=2)
    blinded = serializers.BooleanField(default=True)
    deadline = serializers.DateField(required=False, allow_null=True)
    instructions = serializers.CharField(required=False, allow_blank=True, default="")
    reader_ids = serializers.ListField(child=serializers.IntegerField(), required=False)
    disagreement_iou = serializers.FloatField(min_value=0, max_value=1, default=0.5)
    date_from = serializers.DateField(required=False, allow_null=True)
    date_to = serializers.DateField(required=False, allow_null=True)
    protocol = serializers.CharField(required=False, allow_blank=True, default="")
    index_below = serializers.FloatField(
        required=False, allow_null=True, min_value=0, max_value=100
    )
    model_disagreement = serializers.BooleanField(default=False)
    series_ids = serializers.ListField(child=serializers.UUIDField(), required=False)


class CampaignListApi(AnnotationApi):
    audit_action = AuditAction.LIST

    @extend_schema(operation_id="campaigns_list", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        leads = selectors.lead_site_ids(user=_user(request))
        campaigns = list(selectors.campaign_list(user=_user(request)))
        progress = selectors.campaign_reader_progress(
            campaign_ids=[c.pk for c in campaigns if c.site_id in leads]
        )
        return Response(
            [
                campaign_out(c, lead=c.site_id in leads, readers=progress.get(c.pk))
                for c in campaigns
            ]
        )

    @extend_schema(request=CampaignCreateInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        self.audit_action = AuditAction.CREATE
        data = CampaignCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        campaign = services.campaign_create(user=_user(request), **data.validated_data)
        return Response(campaign_out(campaign, lead=True), status=status.HTTP_201_CREATED)


class CampaignStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=CampaignStatus.values,
        help_text="closed: no more readings, out of the readers' queues, blinding ended.",
    )


class CampaignDetailApi(AnnotationApi):
    @extend_schema(request=CampaignStatusSerializer, responses=OpenApiTypes.OBJECT)
    def patch(self, request: Request, campaign_id: uuid.UUID) -> Response:
        """Close the campaign, or open it again (a lead of its site)."""
        campaign = selectors.campaign_get(user=_user(request), campaign_id=campaign_id)
        body = CampaignStatusSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.campaign_set_status(
            user=_user(request), campaign=campaign, status=body.validated_data["status"]
        )
        return Response(campaign_out(campaign, lead=True))

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        campaign = selectors.campaign_get(user=_user(request), campaign_id=campaign_id)
        lead = selectors.is_lead(user=_user(request), site_id=campaign.site_id)
        data = campaign_out(campaign, lead=lead)
        mine = selectors.reader_queue(user=_user(request), campaign_id=campaign.pk)
        data["my_progress"] = selectors.queue_progress(assignments=mine)
        return Response(data)


class CampaignDisagreementsApi(AnnotationApi):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        campaign = selectors.campaign_get_for_lead(user=_user(request), campaign_id=campaign_id)
        rows = services.disagreements(campaign=campaign)
        self.audit_action = AuditAction.LIST
        self.accessed(_series_of([str(r["series_id"]) for r in rows]), per_study=True)
        return Response(rows)


class CampaignAgreementApi(AnnotationApi):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, campaign_id: uuid.UUID, fmt: str = "json") -> Any:
        campaign = selectors.campaign_get_for_lead(user=_user(request), campaign_id=campaign_id)
        rows = reports.campaign_agreement(campaign=campaign)
        if fmt == "csv":
            response = HttpResponse(reports.agreement_csv(rows), content_type="text/csv")
            response["Content-Disposition"] = f'attachment; filename="agreement-{campaign.pk}.csv"'
            return response
        if fmt == "png":
            return HttpResponse(reports.agreement_plot(rows), content_type="image/png")
        return Response(rows)


class CampaignSuggestionsApi(AnnotationApi):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        campaign = selectors.campaign_get_for_lead(user=_user(request), campaign_id=campaign_id)
        rows = reports.active_learning_suggest(campaign=campaign)
        self.audit_action = AuditAction.LIST
        self.accessed(_series_of([str(r["series_id"]) for r in rows]), per_study=True)
        return Response(rows)


class AddSeriesInput(serializers.Serializer):
    series_ids = serializers.ListField(child=serializers.UUIDField(), min_length=1)


class CampaignAddSeriesApi(AnnotationApi):
    @extend_schema(request=AddSeriesInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        campaign = selectors.campaign_get_for_lead(user=_user(request), campaign_id=campaign_id)
        data = AddSeriesInput(data=request.data)
        data.is_valid(raise_exception=True)
        added = services.campaign_add_series(
            user=_user(request), campaign=campaign, series_ids=data.validated_data["series_ids"]
        )
        return Response({"added": added, **campaign_out(campaign, lead=True)})


class SliceReadingsApi(AnnotationApi):
    """For the adjudicator: every reader's latest reading of a slice and the adjudication."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, campaign_id: uuid.UUID, instance_id: uuid.UUID) -> Response:
        campaign = selectors.campaign_get_for_lead(user=_user(request), campaign_id=campaign_id)
        readings = selectors.campaign_latest_readings(campaign=campaign).get(str(instance_id), [])
        if not readings:
            raise NotInScope("instance", str(instance_id), campaign.site_id)
        instance = Instance.objects.select_related("series__study").get(pk=instance_id)
        self.accessed([instance])
        types = campaign.artifact_types
        adj = selectors.adjudication_latest(campaign=campaign, instance_id=instance_id)
        return Response(
            {
                "instance_id": str(instance.pk),
                "series_id": str(instance.series_id),
                "study_uid": instance.series.study.study_uid,
                "series_uid": instance.series.series_uid,
                "sop_uid": instance.sop_uid,
                "rows": instance.rows,
                "columns": instance.columns,
                "artifact_types": types,
                "reasons": services.readings_disagree(readings, types, campaign.disagreement_iou),
                "readings": [
                    {
                        "reader": a.assignment.reader.get_username(),
                        **annotation_out(a, types, instance),
                    }
                    for a in readings
                ],
                "adjudication": None
                if adj is None
                else {
                    "version": adj.version,
                    "method": adj.method,
                    "diagnostic": adj.diagnostic,
                    "types_present": adj.types_present,
                    "adjudicator": adj.adjudicator.get_username(),
                    "masks": {
                        n: rle_encode(m)
                        for n, m in services.stored_masks(
                            adj.masks, (instance.rows, instance.columns), list(adj.masks)
                        ).items()
                    },
                },
            }
        )


class AdjudicationInput(serializers.Serializer):
    instance_id = serializers.UUIDField()
    method = serializers.ChoiceField(
        choices=[MaskSource.PICK, MaskSource.MAJORITY, MaskSource.STAPLE, MaskSource.REDRAW]
    )
    annotation_id = serializers.IntegerField(required=False, allow_null=True)
    masks = serializers.DictField(required=False)
    diagnostic = serializers.BooleanField(required=False, allow_null=True, default=None)
    types_present = serializers.ListField(child=serializers.CharField(), required=False)


class AdjudicationCreateApi(AnnotationApi):
    audit_action = AuditAction.ANNOTATE

    @extend_schema(request=AdjudicationInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        campaign = selectors.campaign_get_for_lead(user=_user(request), campaign_id=campaign_id)
        data = AdjudicationInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = dict(data.validated_data)
        instance = (
            Instance.objects.select_related("series__study")
            .filter(pk=v["instance_id"], site_id=campaign.site_id)
            .first()
        )
        if instance is None:
            raise NotInScope("instance", str(v["instance_id"]), campaign.site_id)
        masks = _decode_masks(v["masks"], instance) if "masks" in v else None
        adj = services.adjudication_save(
            user=_user(request),
            campaign=campaign,
            instance_id=instance.pk,
            method=v["method"],
            annotation_id=v.get("annotation_id"),
            masks=masks,
            diagnostic=v.get("diagnostic"),
            types_present=v.get("types_present"),
        )
        self.accessed([instance])
        return Response(
            {"version": adj.version, "method": adj.method, "mask_pixels": adj.mask_pixels},
            status=status.HTTP_201_CREATED,
        )


# --- readers -------------------------------------------------------------------------------


class QueueApi(AnnotationApi):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        queue = selectors.reader_queue(user=_user(request))
        nxt = selectors.queue_next(assignments=queue)
        assignments = list(queue)
        self.audit_action = AuditAction.LIST
        self.accessed([a.series for a in assignments], per_study=True)
        return Response(
            {
                "progress": selectors.queue_progress(assignments=queue),
                "next": assignment_out(nxt) if nxt else None,
                "assignments": [assignment_out(a) for a in assignments],
            }
        )


class AssignmentDetailApi(AnnotationApi):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, assignment_id: uuid.UUID) -> Response:
        a = selectors.assignment_get(user=_user(request), assignment_id=assignment_id)
        instances = selectors.series_instances(series=a.series)
        done = selectors.annotated_instance_ids(assignment=a)
        queue = selectors.reader_queue(user=a.reader, campaign_id=a.campaign_id)
        c = a.campaign
        own = a.reader_id == request.user.pk
        self.accessed([a.series])
        return Response(
            {
                **assignment_out(a),
                "study_uid": a.series.study.study_uid,
                "series_uid": a.series.series_uid,
                "artifact_types": c.artifact_types,
                "blinded": _blinded(request, a),
                "instructions": c.instructions,
                "deadline": c.deadline.isoformat() if c.deadline else None,
                "own": own,
                "resume_instance_id": str(a.last_instance_id) if a.last_instance_id else None,
                "progress": selectors.queue_progress(assignments=queue),
                "instances": [
                    {
                        "id": str(i.pk),
                        "sop_uid": i.sop_uid,
                        "instance_number": i.instance_number,
                        "rows": i.rows,
                        "columns": i.columns,
                        "annotated": str(i.pk) in done,
                    }
                    for i in instances
                ],
            }
        )


class SkipInput(serializers.Serializer):
    reason = serializers.CharField(max_length=300)


class AssignmentSkipApi(AnnotationApi):
    @extend_schema(request=SkipInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, assignment_id: uuid.UUID) -> Response:
        a = selectors.assignment_get(user=_user(request), assignment_id=assignment_id)
        data = SkipInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.assignment_skip(
            user=_user(request), assignment=a, reason=data.validated_data["reason"]
        )
        self.audit_action = AuditAction.ANNOTATE
        self.accessed([a.series])
        return Response(assignment_out(a))


class AssignmentFinishApi(AnnotationApi):
    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, assignment_id: uuid.UUID) -> Response:
        a = selectors.assignment_get(user=_user(request), assignment_id=assignment_id)
        services.assignment_finish(user=_user(request), assignment=a)
        self.audit_action = AuditAction.ANNOTATE
        self.accessed([a.series])
        return Response(assignment_out(a))


class AnnotationInput(serializers.Serializer):
    masks = serializers.DictField()
    types_present = serializers.ListField(child=serializers.CharField(), required=False)
    diagnostic = serializers.BooleanField(required=False, allow_null=True, default=None)
    confidence = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=5)
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=[MaskSource.EMPTY, MaskSource.MODEL, MaskSource.ASSIST, MaskSource.PREVIOUS],
        default=MaskSource.EMPTY,
    )
    time_spent_ms = serializers.IntegerField(min_value=0, default=0)


class SliceAnnotationApi(AnnotationApi):
    audit_action = AuditAction.VIEW

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, assignment_id: uuid.UUID, instance_id: uuid.UUID) -> Response:
        a = selectors.assignment_get(user=_user(request), assignment_id=assignment_id)
        instance = _instance_of(a, instance_id)
        latest = selectors.annotation_latest(assignment=a, instance_id=instance.pk)
        self.accessed([instance])
        data = annotation_out(latest, a.campaign.artifact_types, instance)
        data["versions"] = [
            {"version": v.version, "source": v.source, "created_at": v.created_at.isoformat()}
            for v in selectors.annotation_versions(assignment=a, instance_id=instance.pk)[:20]
        ]
        return Response(data)

    @extend_schema(request=AnnotationInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, assignment_id: uuid.UUID, instance_id: uuid.UUID) -> Response:
        self.audit_action = AuditAction.ANNOTATE
        a = selectors.assignment_get(user=_user(request), assignment_id=assignment_id)
        instance = _instance_of(a, instance_id)
        data = AnnotationInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = dict(data.validated_data)
        ann = services.annotation_save(
            user=_user(request),
            assignment=a,
            instance_id=instance.pk,
            masks=_decode_masks(v["masks"], instance),
            types_present=v.get("types_present"),
            diagnostic=v.get("diagnostic"),
            confidence=v.get("confidence"),
            source=v["source"],
            time_spent_ms=v["time_spent_ms"],
        )
        self.accessed([instance])
        a.refresh_from_db()
        return Response(
            {"version": ann.version, "mask_pixels": ann.mask_pixels, "status": a.status},
            status=status.HTTP_201_CREATED,
        )


def _blinded(request: Request, a: Assignment) -> bool:
    """Whether the model's results for this assignment's series are kept from the caller: a
    reader of a blinded campaign (a lead looking at a reader's work is not), and anyone who reads
    the series blind in any active blinded campaign — a second, unblinded campaign of the same
    series, or a lead who named themself a reader, must not lift it."""
    user = _user(request)
    if a.campaign.blinded and not selectors.is_lead(user=user, site_id=a.site_id):
        return True
    return model_results_blinded(user=user, series_id=a.series_id)


def _require_unblinded(request: Request, a: Assignment) -> None:
    if _blinded(request, a):
        raise exceptions.PermissionDenied("this campaign is blinded to the model")


class SliceModelMasksApi(AnnotationApi):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, assignment_id: uuid.UUID, instance_id: uuid.UUID) -> Response:
        a = selectors.assignment_get(user=_user(request), assignment_id=assignment_id)
        instance = _instance_of(a, instance_id)
        _require_unblinded(request, a)
        types = a.campaign.artifact_types
        shape = (instance.rows, instance.columns)
        masks = {
            f.artifact_type: rle_encode(
                services.stored_masks({f.artifact_type: f.mask_key}, shape, [f.artifact_type])[
                    f.artifact_type
                ]
            )
            for f in selectors.model_findings(instance=instance, types=types)
            if f.mask_key
        }
        self.accessed([instance])
        return Response({"masks": masks})


class SliceOtherReadingsApi(AnnotationApi):
    """Not blinded: the other readers' latest readings of this slice (blinded: a 403)."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, assignment_id: uuid.UUID, instance_id: uuid.UUID) -> Response:
        a = selectors.assignment_get(user=_user(request), assignment_id=assignment_id)
        instance = _instance_of(a, instance_id)
        _require_unblinded(request, a)
        readings = selectors.campaign_latest_readings(campaign=a.campaign).get(str(instance.pk), [])
        types = a.campaign.artifact_types
        self.accessed([instance])
        return Response(
            [
                {"reader": r.assignment.reader.get_username(), **annotation_out(r, types, instance)}
                for r in readings
                if r.assignment_id != a.pk
            ]
        )


MAX_HINTS = 1000


class AssistInput(serializers.Serializer):
    hints = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=2),
        required=False,
        default=list,
        max_length=MAX_HINTS,
    )


class AssistUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "the model did not answer in time; try again"


class SliceAssistApi(AnnotationApi):
    """Re-run the model on the slice (a ``gpu`` worker) and return its masks, kept to the parts
    the hint clicks point at."""

    @extend_schema(request=AssistInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, assignment_id: uuid.UUID, instance_id: uuid.UUID) -> Response:
        from annotation.tasks import QUEUE, slice_assist_task

        a = selectors.assignment_get(user=_user(request), assignment_id=assignment_id)
        instance = _instance_of(a, instance_id)
        _require_unblinded(request, a)
        data = AssistInput(data=request.data)
        data.is_valid(raise_exception=True)
        hints = [(int(r), int(c)) for r, c in data.validated_data["hints"]]
        if not all(0 <= r < instance.rows and 0 <= c < instance.columns for r, c in hints):
            raise exceptions.ValidationError(
                {
                    "hints": [
                        f"each hint is a [row, column] inside the {instance.rows}x"
                        f"{instance.columns} image"
                    ]
                }
            )
        try:
            raw = slice_assist_task.apply_async(args=[str(instance.pk)], queue=QUEUE).get(
                timeout=120
            )
        except CeleryTimeoutError:
            raise AssistUnavailable() from None
        shape = (instance.rows, instance.columns)
        masks = {}
        for name in a.campaign.artifact_types:
            kept = keep_hinted(rle_decode(raw[name], shape), hints)
            if kept.any():
                masks[name] = rle_encode(kept)
        self.accessed([instance])
        return Response({"masks": masks, "hints": len(hints)})


# --- training sets, fine-tuning, promotion -------------------------------------------------


def training_set_out(ts: TrainingSet) -> dict[str, Any]:
    return {
        "id": str(ts.pk),
        "version": ts.version,
        "sha256": ts.sha256,
        "path": ts.path,
        "simulated_ratio": ts.simulated_ratio,
        "annotated_slices": ts.annotated_slices,
        "simulated_slices": ts.simulated_slices,
        "created_at": ts.created_at.isoformat(),
        "verified": training.training_set_verify(training_set=ts),
    }


def finetune_out(job: FineTune) -> dict[str, Any]:
    return {
        "id": str(job.pk),
        "training_set_id": str(job.training_set_id),
        "status": job.status,
        "progress": job.progress,
        "message": job.message,
        "params": job.params,
        "metrics": job.metrics,
        "base_model": str(job.base_model) if job.base_model_id else None,
        "candidate": {
            "id": job.candidate.pk,
            "name": str(job.candidate),
            "deployed": job.candidate.is_deployed,
        }
        if job.candidate
        else None,
    }


class ExportInput(serializers.Serializer):
    simulated_ratio = serializers.FloatField(min_value=0, max_value=0.95, default=0.0)
    seed = serializers.IntegerField(min_value=0, default=0)


class TrainingSetListApi(AnnotationApi):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        campaign = selectors.campaign_get_for_lead(user=_user(request), campaign_id=campaign_id)
        return Response(
            [training_set_out(t) for t in selectors.training_set_list(campaign=campaign)]
        )

    @extend_schema(request=ExportInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        self.audit_action = AuditAction.EXPORT
        campaign = selectors.campaign_get_for_lead(user=_user(request), campaign_id=campaign_id)
        data = ExportInput(data=request.data)
        data.is_valid(raise_exception=True)
        ts = training.training_set_export(
            user=_user(request), campaign=campaign, **data.validated_data
        )
        self.accessed(
            [s.series for s in campaign.items.select_related("series__study")], per_study=True
        )
        return Response(training_set_out(ts), status=status.HTTP_201_CREATED)


class FineTuneInput(serializers.Serializer):
    epochs = serializers.IntegerField(default=3)
    steps = serializers.IntegerField(default=20)
    crop = serializers.IntegerField(default=128)
    batch = serializers.IntegerField(default=4)
    learning_rate = serializers.FloatField(min_value=0, max_value=1, default=2e-4)


class FineTuneCreateApi(AnnotationApi):
    @extend_schema(request=FineTuneInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, training_set_id: uuid.UUID) -> Response:
        ts = selectors.training_set_get(user=_user(request), training_set_id=training_set_id)
        data = FineTuneInput(data=request.data)
        data.is_valid(raise_exception=True)
        job = training.finetune_request(user=_user(request), training_set=ts, **data.validated_data)
        return Response(finetune_out(job), status=status.HTTP_201_CREATED)


class FineTuneListApi(AnnotationApi):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        campaign = selectors.campaign_get_for_lead(user=_user(request), campaign_id=campaign_id)
        return Response([finetune_out(j) for j in selectors.finetune_list(campaign=campaign)])


class FineTuneDetailApi(AnnotationApi):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, finetune_id: uuid.UUID) -> Response:
        return Response(
            finetune_out(selectors.finetune_get(user=_user(request), finetune_id=finetune_id))
        )


class PromoteInput(serializers.Serializer):
    reason = serializers.CharField(max_length=500)
    rescore = serializers.BooleanField(default=False)


class FineTunePromoteApi(AnnotationApi):
    @extend_schema(request=PromoteInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, finetune_id: uuid.UUID) -> Response:
        job = selectors.finetune_get(user=_user(request), finetune_id=finetune_id)
        data = PromoteInput(data=request.data)
        data.is_valid(raise_exception=True)
        training.finetune_promote(user=_user(request), finetune=job, **data.validated_data)
        job.refresh_from_db()
        if job.candidate is not None:
            job.candidate.refresh_from_db()
        return Response(finetune_out(job))


class RollbackInput(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


class ModelRollbackApi(AnnotationApi):
    @extend_schema(request=RollbackInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        campaign = selectors.campaign_get_for_lead(user=_user(request), campaign_id=campaign_id)
        data = RollbackInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = training.model_rollback_by_lead(
            user=_user(request), site_id=campaign.site_id, reason=data.validated_data["reason"]
        )
        return Response({"deployed": str(version) if version is not None else None})
