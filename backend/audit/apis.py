"""Read-only access to the audit trail for site QA administrators (and the superuser)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.accounts.models import Role
from backend.accounts.selectors import site_ids_with_role
from backend.audit.models import AuditAction
from backend.audit.selectors import audit_event_list
from backend.audit.services import AuditTarget, audit_record


class AuditEventOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    at = serializers.DateTimeField()
    user_id = serializers.IntegerField(allow_null=True)
    username = serializers.CharField()
    roles = serializers.CharField()
    site_id = serializers.IntegerField(allow_null=True)
    action = serializers.CharField()
    outcome = serializers.CharField()
    object_type = serializers.CharField()
    object_id = serializers.CharField()
    study_uid = serializers.CharField()
    source_ip = serializers.IPAddressField(allow_null=True)
    request_id = serializers.CharField()


class AuditEventListFilterSerializer(serializers.Serializer):
    site = serializers.IntegerField(required=False)
    action = serializers.CharField(required=False)
    outcome = serializers.CharField(required=False)


class AuditEventListApi(APIView):
    @extend_schema(
        parameters=[AuditEventListFilterSerializer],
        responses=AuditEventOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        filters = AuditEventListFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        site_ids = site_ids_with_role(user=request.user, roles=[Role.SITE_ADMIN])
        qs = audit_event_list(
            site_ids=site_ids,
            include_siteless=request.user.is_superuser,
            **filters.validated_data,
        )
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(qs, request, view=self) or []
        response = paginator.get_paginated_response(
            AuditEventOutputSerializer(page, many=True).data
        )
        response["Cache-Control"] = "no-store"
        # Reading the trail is itself on the trail (checklist L-03): one row per site read.
        wanted = filters.validated_data.get("site")
        read = sorted(site_ids) if wanted is None else sorted(set(site_ids) & {wanted})
        targets = [AuditTarget("audit_trail", str(site_id), site_id) for site_id in read]
        if request.user.is_superuser and wanted is None:
            targets.append(AuditTarget("audit_trail", "all", None))
        audit_record(
            user=request.user, action=AuditAction.LIST, targets=targets, request=request._request
        )
        return response
