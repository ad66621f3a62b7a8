"""The upload API behind the upload page: create, send chunks, resume, complete, follow."""

from __future__ import annotations

import uuid
from typing import cast

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.accounts.models import User
from backend.accounts.selectors import sending_site_for
from backend.ingest.models import Upload
from backend.ingest.uploads import (
    MAX_CHUNK_BYTES,
    UploadError,
    upload_append,
    upload_cancel,
    upload_complete,
    upload_create,
)


class UploadCreateInputSerializer(serializers.Serializer):
    filename = serializers.CharField(max_length=1000)
    size = serializers.IntegerField(min_value=1)
    site = serializers.CharField(required=False, help_text="site id or slug (several sites)")


class UploadResultSerializer(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=["accepted", "duplicate", "rejected"])
    reason = serializers.CharField(allow_blank=True)
    series_id = serializers.CharField(allow_blank=True)


class UploadOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    filename = serializers.CharField()
    size = serializers.IntegerField()
    received = serializers.IntegerField()
    chunk_size = serializers.SerializerMethodField()
    status = serializers.CharField()
    files_total = serializers.IntegerField()
    files_done = serializers.IntegerField()
    results = UploadResultSerializer(many=True)
    error = serializers.CharField()

    def get_chunk_size(self, obj: Upload) -> int:
        return MAX_CHUNK_BYTES


class OctetStreamParser(BaseParser):
    media_type = "application/octet-stream"

    def parse(self, stream, media_type=None, parser_context=None):  # type: ignore[no-untyped-def]
        return stream.read(MAX_CHUNK_BYTES + 1)


def _error(exc: UploadError) -> Response:
    return Response({"detail": exc.message, **exc.extra}, status=exc.status)


def _own_upload(request: Request, upload_id: uuid.UUID) -> Upload:
    """Uploads are private to their sender (and the superuser)."""
    qs = Upload.objects.all()
    if not request.user.is_superuser:
        qs = qs.filter(user=cast(User, request.user))
    upload = qs.filter(pk=upload_id).first()
    if upload is None:
        raise exceptions.NotFound()
    return upload


class UploadCreateApi(APIView):
    @extend_schema(request=UploadCreateInputSerializer, responses={201: UploadOutputSerializer})
    def post(self, request: Request) -> Response:
        data = UploadCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        site = sending_site_for(user=request.user, requested=data.validated_data.get("site"))
        if site is None:
            raise exceptions.PermissionDenied(
                "You may not send images, or you send for several sites: name one."
            )
        try:
            upload = upload_create(
                user=cast(User, request.user),
                site=site,
                filename=data.validated_data["filename"],
                size=data.validated_data["size"],
            )
        except UploadError as exc:
            return _error(exc)
        return Response(UploadOutputSerializer(upload).data, status=status.HTTP_201_CREATED)


class UploadDetailApi(APIView):
    @extend_schema(responses=UploadOutputSerializer)
    def get(self, request: Request, upload_id: uuid.UUID) -> Response:
        return Response(UploadOutputSerializer(_own_upload(request, upload_id)).data)

    @extend_schema(request=None, responses=UploadOutputSerializer)
    def delete(self, request: Request, upload_id: uuid.UUID) -> Response:
        """Cancel an upload that is still receiving (its chunks are deleted)."""
        upload = _own_upload(request, upload_id)
        try:
            upload = upload_cancel(upload_id=str(upload.pk))
        except UploadError as exc:
            return _error(exc)
        return Response(UploadOutputSerializer(upload).data)


class UploadChunkApi(APIView):
    parser_classes = [OctetStreamParser]

    @extend_schema(
        request={"application/octet-stream": bytes},
        parameters=[OpenApiParameter("offset", int, required=True)],
        responses=UploadOutputSerializer,
    )
    def put(self, request: Request, upload_id: uuid.UUID) -> Response:
        upload = _own_upload(request, upload_id)
        try:
            offset = int(request.query_params.get("offset", ""))
        except ValueError:
            raise exceptions.ValidationError({"offset": "an integer is required"}) from None
        try:
            chunk = request.data
            if not isinstance(chunk, bytes):
                raise exceptions.UnsupportedMediaType(request.content_type)
            upload = upload_append(upload_id=str(upload.pk), offset=offset, data=chunk)
        except UploadError as exc:
            return _error(exc)
        return Response(UploadOutputSerializer(upload).data)


class UploadCompleteApi(APIView):
    @extend_schema(request=None, responses=UploadOutputSerializer)
    def post(self, request: Request, upload_id: uuid.UUID) -> Response:
        upload = _own_upload(request, upload_id)
        try:
            upload = upload_complete(upload_id=str(upload.pk))
        except UploadError as exc:
            return _error(exc)
        return Response(UploadOutputSerializer(upload).data, status=status.HTTP_202_ACCEPTED)
