"""Scoring results as JSON: the same data the WebSocket events carry, for clients that poll."""

from __future__ import annotations

import uuid

from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from backend.audit.mixins import ClinicalAPIView
from backend.audit.models import AuditAction
from backend.scoring.models import Finding
from backend.scoring.selectors import finding_get, series_result
from backend.storage.store import store_get


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
    suitability_index = serializers.IntegerField(help_text="0-100, 100 = fully diagnostic")
    nondiagnostic = serializers.BooleanField()
    reason = serializers.CharField()
    findings = FindingOutputSerializer(many=True)


class SeriesResultSerializer(serializers.Serializer):
    series_id = serializers.UUIDField()
    status = serializers.CharField()
    model = serializers.CharField(allow_null=True)
    suitability_index = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    instances = InstanceResultSerializer(many=True)


class SeriesResultApi(ClinicalAPIView):
    audit_action = AuditAction.VIEW

    @extend_schema(responses=SeriesResultSerializer)
    def get(self, request: Request, series_id: uuid.UUID) -> Response:
        series, run = series_result(user=request.user, series_id=series_id)
        self.accessed([series])
        instances = []
        if run is not None:
            findings: dict[str, list[object]] = {}
            for finding in run.findings.all():
                findings.setdefault(str(finding.instance_id), []).append(finding)
            for score in sorted(
                run.instance_scores.all(), key=lambda s: s.instance.instance_number or 0
            ):
                instances.append(
                    {
                        "instance_id": score.instance_id,
                        "sop_uid": score.instance.sop_uid,
                        "instance_number": score.instance.instance_number,
                        "suitability_index": round(score.suitability * 100),
                        "nondiagnostic": score.nondiagnostic,
                        "reason": score.reason,
                        "findings": findings.get(str(score.instance_id), []),
                    }
                )
        out = {
            "series_id": series.pk,
            "status": series.status,
            "model": str(run.model_version) if run else None,
            "suitability_index": round(run.suitability * 100)
            if run and run.suitability is not None
            else None,
            "reason": run.reason if run else "",
            "instances": instances,
        }
        return Response(SeriesResultSerializer(out).data)


class FindingMaskApi(ClinicalAPIView):
    """One finding's mask as a 1-bit PNG (decrypted from the store), for the viewer's overlay."""

    audit_action = AuditAction.VIEW

    @extend_schema(responses={(200, "image/png"): bytes})
    def get(self, request: Request, finding_id: int) -> HttpResponse:
        finding = finding_get(user=request.user, finding_id=finding_id)
        self.accessed([finding.instance.series])
        if not finding.mask_key:
            return HttpResponse(status=404)
        response = HttpResponse(store_get(finding.mask_key), content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"
        return response
