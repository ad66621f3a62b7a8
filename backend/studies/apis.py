"""REST endpoints for studies, series and instances: parse, call a selector, format."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response

from backend.audit.mixins import ClinicalAPIView
from backend.audit.models import AuditAction
from backend.scoring.selectors import blinded_series_ids
from backend.studies import selectors
from backend.studies.serializers import (
    InstanceOutputSerializer,
    SeriesListFilterSerializer,
    SeriesOutputSerializer,
    StudyListFilterSerializer,
    StudyOutputSerializer,
)


class StudyListApi(ClinicalAPIView):
    audit_action = AuditAction.LIST

    @extend_schema(
        parameters=[StudyListFilterSerializer], responses=StudyOutputSerializer(many=True)
    )
    def get(self, request: Request) -> Response:
        filters = StudyListFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        qs = selectors.study_list(user=request.user, site_id=filters.validated_data.get("site"))
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(qs, request, view=self) or []
        self.accessed(page)
        return paginator.get_paginated_response(StudyOutputSerializer(page, many=True).data)


class StudyDetailApi(ClinicalAPIView):
    audit_action = AuditAction.VIEW

    @extend_schema(responses=StudyOutputSerializer)
    def get(self, request: Request, study_id: uuid.UUID) -> Response:
        study = selectors.study_get(user=request.user, study_id=study_id)
        self.accessed([study])
        return Response(StudyOutputSerializer(study).data)


class SeriesListApi(ClinicalAPIView):
    """The worklist: the caller's series, filtered, searched, sorted and paged."""

    audit_action = AuditAction.LIST

    class FilterSerializer(SeriesListFilterSerializer):
        received_from = serializers.DateField(required=False)
        received_to = serializers.DateField(required=False)
        q = serializers.CharField(
            required=False, max_length=100, help_text="Search description, protocol, scanner."
        )
        nondiagnostic = serializers.BooleanField(
            required=False, default=False, help_text="Only series judged non-diagnostic."
        )
        unreviewed = serializers.BooleanField(
            required=False, default=False, help_text="Only series without a reviewer verdict."
        )
        ordering = serializers.ChoiceField(
            choices=sorted(selectors.SERIES_ORDERINGS), required=False, default="received"
        )

    class OutputSerializer(SeriesOutputSerializer):
        site_name = serializers.CharField(source="site.name")
        suitability_index = serializers.SerializerMethodField(
            help_text="0-100, 100 = fully diagnostic; null before scoring."
        )
        nondiagnostic = serializers.BooleanField(source="run_nondiagnostic", allow_null=True)
        dominant_artifact = serializers.CharField(allow_null=True)
        slice_count = serializers.IntegerField(
            help_text="Slices: the instances' frames (an Enhanced MR instance holds many)."
        )
        verdict = serializers.CharField(
            allow_null=True, help_text="The latest reviewer verdict, null if not reviewed."
        )

        def get_suitability_index(self, series: object) -> int | None:
            value = getattr(series, "suitability", None)
            return None if value is None else round(value * 100)

    @extend_schema(parameters=[FilterSerializer], responses=OutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        qs = selectors.series_list(
            user=request.user,
            study_id=data.get("study"),
            site_id=data.get("site"),
            status=data.get("status"),
            modality=data.get("modality"),
            received_from=data.get("received_from"),
            received_to=data.get("received_to"),
            search=data.get("q"),
            nondiagnostic=data["nondiagnostic"],
            unreviewed=data["unreviewed"],
            ordering=data["ordering"],
        )
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(qs, request, view=self) or []
        self.accessed(page, per_study=True)
        data = self.OutputSerializer(page, many=True).data
        fields = ("suitability", "suitability_index", "nondiagnostic", "dominant_artifact")
        _blind(request, data, fields)
        return paginator.get_paginated_response(data)


class SeriesDetailApi(ClinicalAPIView):
    audit_action = AuditAction.VIEW

    @extend_schema(responses=SeriesOutputSerializer)
    def get(self, request: Request, series_id: uuid.UUID) -> Response:
        series = selectors.series_get(user=request.user, series_id=series_id)
        self.accessed([series])
        data = SeriesOutputSerializer(series).data
        _blind(request, [data], ("suitability",))
        return Response(data)


class SeriesInstancesApi(ClinicalAPIView):
    audit_action = AuditAction.VIEW

    @extend_schema(responses=InstanceOutputSerializer(many=True))
    def get(self, request: Request, series_id: uuid.UUID) -> Response:
        series = selectors.series_get(user=request.user, series_id=series_id)
        instances = list(selectors.instance_list(user=request.user, series_id=series.pk))
        self.accessed([series])
        data = InstanceOutputSerializer(instances, many=True).data
        if str(series.pk) in blinded_series_ids(user=request.user):
            for item in data:
                item["suitability"] = None
        return Response(data)


def _blind(request: Request, items: Any, fields: tuple[str, ...]) -> None:
    """Leave the model's results out of the series ``request.user`` reads blind (an active
    blinded annotation campaign): the worklist showed them while the reading was blind."""
    blinded = blinded_series_ids(user=request.user)
    for item in items:
        if str(item["id"]) in blinded:
            for name in fields:
                if name in item:
                    item[name] = None
