"""REST endpoints for studies, series and instances: parse, call a selector, format."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response

from backend.audit.mixins import ClinicalAPIView
from backend.audit.models import AuditAction
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
    audit_action = AuditAction.LIST

    @extend_schema(
        parameters=[SeriesListFilterSerializer], responses=SeriesOutputSerializer(many=True)
    )
    def get(self, request: Request) -> Response:
        filters = SeriesListFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        qs = selectors.series_list(
            user=request.user,
            study_id=data.get("study"),
            site_id=data.get("site"),
            status=data.get("status"),
            modality=data.get("modality"),
        )
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(qs, request, view=self) or []
        self.accessed(page, per_study=True)
        return paginator.get_paginated_response(SeriesOutputSerializer(page, many=True).data)


class SeriesDetailApi(ClinicalAPIView):
    audit_action = AuditAction.VIEW

    @extend_schema(responses=SeriesOutputSerializer)
    def get(self, request: Request, series_id: uuid.UUID) -> Response:
        series = selectors.series_get(user=request.user, series_id=series_id)
        self.accessed([series])
        return Response(SeriesOutputSerializer(series).data)


class SeriesInstancesApi(ClinicalAPIView):
    audit_action = AuditAction.VIEW

    @extend_schema(responses=InstanceOutputSerializer(many=True))
    def get(self, request: Request, series_id: uuid.UUID) -> Response:
        series = selectors.series_get(user=request.user, series_id=series_id)
        instances = list(selectors.instance_list(user=request.user, series_id=series.pk))
        self.accessed([series])
        return Response(InstanceOutputSerializer(instances, many=True).data)
