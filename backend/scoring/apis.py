"""Scoring results as JSON (the same data the WebSocket events carry, for clients that poll) and
the region of diagnostic interest a radiologist marks on a series."""

from __future__ import annotations

import uuid
from typing import Any, cast

from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from backend.accounts.models import Role, User
from backend.accounts.selectors import user_has_role
from backend.audit.mixins import ClinicalAPIView, refuse
from backend.audit.models import AuditAction
from backend.scoring.models import Finding, ScoringRun
from backend.scoring.selectors import (
    NoSuchRun,
    finding_get,
    model_results_blinded,
    series_quarantined,
    series_result,
    series_roi,
    series_runs,
)
from backend.scoring.services import RoiError, roi_payload, series_roi_clear, series_roi_set
from backend.storage.store import store_get
from backend.studies.models import Series
from backend.studies.selectors import series_get


class FindingOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    artifact_type = serializers.CharField()
    mask_url = serializers.SerializerMethodField(
        help_text="The mask as a 1-bit PNG on the instance's pixel grid (white = artifact)."
    )
    area_px = serializers.IntegerField()
    area_mm2 = serializers.FloatField(allow_null=True)
    head_fraction = serializers.FloatField()
    bbox = serializers.ListField(child=serializers.IntegerField())
    confidence = serializers.FloatField()
    advice = serializers.CharField()
    review_state = serializers.CharField()

    def get_mask_url(self, finding: Finding) -> str | None:
        return reverse("api-finding-mask", args=[finding.pk]) if finding.mask_key else None


class InstanceResultSerializer(serializers.Serializer):
    instance_id = serializers.UUIDField()
    sop_uid = serializers.CharField()
    instance_number = serializers.IntegerField(allow_null=True)
    frame = serializers.IntegerField(
        help_text="The frame number (1-based, as in WADO-RS /frames/N): an Enhanced MR instance "
        "has one entry per frame, a classic instance one entry, frame 1."
    )
    frame_count = serializers.IntegerField(help_text="The instance's NumberOfFrames.")
    suitability_index = serializers.IntegerField(help_text="0-100, 100 = fully diagnostic")
    roi_suitability_index = serializers.IntegerField(
        allow_null=True,
        help_text="The index for artifacts inside the region of interest only; null without a "
        "region or for a slice outside its instance range.",
    )
    nondiagnostic = serializers.BooleanField()
    reason = serializers.CharField()
    roi_reason = serializers.CharField(allow_blank=True)
    findings = FindingOutputSerializer(many=True)


class RoiOutputSerializer(serializers.Serializer):
    polygon = serializers.ListField(child=serializers.ListField(child=serializers.FloatField()))
    first_instance = serializers.IntegerField(allow_null=True)
    last_instance = serializers.IntegerField(allow_null=True)
    frame = serializers.IntegerField(
        allow_null=True, help_text="Only this frame of the instances in range; null: all."
    )
    set_by = serializers.CharField(allow_null=True)
    set_at = serializers.DateTimeField()


class QuarantinedSliceSerializer(serializers.Serializer):
    instance_id = serializers.UUIDField()
    sop_uid = serializers.CharField()
    instance_number = serializers.IntegerField(allow_null=True)
    attempts = serializers.IntegerField()
    reason = serializers.CharField()


class RunSummarySerializer(serializers.Serializer):
    model = serializers.CharField()
    version = serializers.CharField()
    deployed = serializers.BooleanField()
    current = serializers.BooleanField()
    suitability_index = serializers.IntegerField(allow_null=True)


class SeriesResultSerializer(serializers.Serializer):
    series_id = serializers.UUIDField()
    status = serializers.CharField()
    model = serializers.CharField(allow_null=True)
    suitability_index = serializers.IntegerField(allow_null=True)
    roi_suitability_index = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    roi_reason = serializers.CharField(allow_blank=True)
    roi = RoiOutputSerializer(allow_null=True)
    instances = InstanceResultSerializer(
        many=True,
        help_text="One entry per scored slice, in InstanceNumber then frame order: an instance "
        "of several frames (Enhanced MR) gives one per frame.",
    )
    quarantined = QuarantinedSliceSerializer(
        many=True, help_text="Slices the scoring gave up on after repeated failures, with why."
    )
    runs = RunSummarySerializer(many=True, help_text="Every model version that scored the series.")


def _index(value: float | None) -> int | None:
    return None if value is None else round(value * 100)


def _result_body(series: Series, run: ScoringRun | None) -> dict[str, Any]:
    instances = []
    quarantined = []
    if run is not None:
        findings: dict[tuple[str, int], list[object]] = {}
        for finding in run.findings.all():
            findings.setdefault((str(finding.instance_id), finding.frame), []).append(finding)
        for score in sorted(
            run.instance_scores.all(),
            key=lambda s: (s.instance.instance_number or 0, s.instance.sop_uid, s.frame),
        ):
            instances.append(
                {
                    "instance_id": score.instance_id,
                    "sop_uid": score.instance.sop_uid,
                    "instance_number": score.instance.instance_number,
                    "frame": score.frame,
                    "frame_count": score.instance.frame_count,
                    "suitability_index": round(score.suitability * 100),
                    "roi_suitability_index": _index(score.roi_suitability),
                    "nondiagnostic": score.nondiagnostic,
                    "reason": score.reason,
                    "roi_reason": score.roi_reason,
                    "findings": findings.get((str(score.instance_id), score.frame), []),
                }
            )
        quarantined = [
            {
                "instance_id": a.instance_id,
                "sop_uid": a.instance.sop_uid,
                "instance_number": a.instance.instance_number,
                "attempts": a.attempts,
                "reason": a.error,
            }
            for a in series_quarantined(series=series, model_version=run.model_version)
        ]
    return {
        "series_id": series.pk,
        "status": series.status,
        "model": str(run.model_version) if run else None,
        "suitability_index": _index(run.suitability) if run else None,
        "roi_suitability_index": _index(run.roi_suitability) if run else None,
        "reason": run.reason if run else "",
        "roi_reason": run.roi_reason if run else "",
        "roi": roi_payload(series_roi(series=series)),
        "instances": instances,
        "quarantined": quarantined,
        "runs": [
            {
                "model": str(r.model_version),
                "version": r.model_version.version,
                "deployed": r.model_version.is_deployed,
                "current": r.pk == series.current_run_id,
                "suitability_index": _index(r.suitability),
            }
            for r in series_runs(series=series)
        ],
    }


BLINDED = "You read this series in a blinded annotation campaign: the model's results are hidden."
"""The 403 of a blinded reader. Not a denied attempt on the audit trail (unlike a role's
refusal, ``refuse``): the viewer asks for a series' result whenever a reader opens it, and a
reader opening twenty of their own blinded series is not someone probing the site."""


class SeriesResultApi(ClinicalAPIView):
    audit_action = AuditAction.VIEW

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "model",
                str,
                description="Read the run of this model version (its version, or 'name version') "
                "instead of the current one.",
            )
        ],
        responses=SeriesResultSerializer,
    )
    def get(self, request: Request, series_id: uuid.UUID) -> Response:
        try:
            series, run = series_result(
                user=request.user, series_id=series_id, model=request.query_params.get("model")
            )
        except NoSuchRun:
            raise exceptions.NotFound("This series has no run of that model version.") from None
        if model_results_blinded(user=request.user, series_id=series.pk):
            raise exceptions.PermissionDenied(BLINDED)
        self.accessed([series])
        return Response(SeriesResultSerializer(_result_body(series, run)).data)


class RoiInputSerializer(serializers.Serializer):
    polygon = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        min_length=3,
        max_length=2000,
        help_text="[[col, row], ...] in image pixel coordinates (pixel (r, c) centred on (c, r)).",
    )
    first_instance = serializers.IntegerField(allow_null=True, required=False, default=None)
    last_instance = serializers.IntegerField(allow_null=True, required=False, default=None)
    frame = serializers.IntegerField(
        allow_null=True,
        required=False,
        default=None,
        min_value=1,
        help_text="Only this frame (1-based) of the instances in range — one slice of an "
        "Enhanced MR instance; omitted or null: every frame.",
    )


class SeriesRoiApi(ClinicalAPIView):
    """The series' region of diagnostic interest: radiologists and site admins of its site."""

    def _series(self, request: Request, series_id: uuid.UUID) -> Series:
        series = series_get(user=request.user, series_id=series_id)
        if not user_has_role(
            user=request.user, site_id=series.site_id, roles=[Role.RADIOLOGIST, Role.SITE_ADMIN]
        ):
            raise refuse(
                "Only the site's radiologists and administrators mark regions of interest.", series
            )
        return series

    def _result(self, request: Request, series: Series) -> Response:
        _, run = series_result(user=request.user, series_id=series.pk)
        if model_results_blinded(user=request.user, series_id=series.pk):
            raise exceptions.PermissionDenied(BLINDED)
        self.accessed([series])
        return Response(SeriesResultSerializer(_result_body(series, run)).data)

    @extend_schema(request=RoiInputSerializer, responses=SeriesResultSerializer)
    def put(self, request: Request, series_id: uuid.UUID) -> Response:
        self.audit_action = AuditAction.ANNOTATE
        series = self._series(request, series_id)
        data = RoiInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            series_roi_set(
                series=series,
                user=cast(User, request.user),
                polygon=data.validated_data["polygon"],
                first_instance=data.validated_data["first_instance"],
                last_instance=data.validated_data["last_instance"],
                frame=data.validated_data["frame"],
            )
        except RoiError as exc:
            raise exceptions.ValidationError({"polygon": [str(exc)]}) from None
        return self._result(request, series)

    @extend_schema(responses=SeriesResultSerializer)
    def delete(self, request: Request, series_id: uuid.UUID) -> Response:
        self.audit_action = AuditAction.DELETE
        series = self._series(request, series_id)
        series_roi_clear(series=series, user=cast(User, request.user))
        return self._result(request, series)


class FindingMaskApi(ClinicalAPIView):
    """One finding's mask as a 1-bit PNG (decrypted from the store), for the viewer's overlay."""

    audit_action = AuditAction.VIEW

    @extend_schema(responses={(200, "image/png"): bytes})
    def get(self, request: Request, finding_id: int) -> HttpResponse:
        finding = finding_get(user=request.user, finding_id=finding_id)
        if model_results_blinded(user=request.user, series_id=finding.instance.series_id):
            raise exceptions.PermissionDenied(BLINDED)
        self.accessed([finding.instance.series])
        if not finding.mask_key:
            return HttpResponse(status=404)
        response = HttpResponse(store_get(finding.mask_key), content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"
        return response
