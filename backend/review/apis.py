"""Review endpoints: parse, call one service or selector, format. Every one is site-scoped
(another site's finding or series is a 404) and audited."""

from __future__ import annotations

import base64
import binascii
import uuid

from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from backend.audit.mixins import ClinicalAPIView, refuse
from backend.audit.models import AuditAction
from backend.review import selectors, services
from backend.review.models import FindingAction, FindingReview, SeriesReview, SeriesVerdict
from backend.scoring.apis import BLINDED
from backend.scoring.selectors import finding_get, model_results_blinded
from backend.storage.store import store_get
from backend.studies.models import Series
from backend.studies.selectors import series_get


class FindingReviewOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    finding_id = serializers.IntegerField()
    action = serializers.CharField()
    comment = serializers.CharField()
    user = serializers.CharField(source="user.username")
    created_at = serializers.DateTimeField()
    mask_url = serializers.SerializerMethodField(
        help_text="The corrected mask (1-bit PNG) of a correction, else null."
    )
    mask_area_px = serializers.IntegerField(allow_null=True)

    def get_mask_url(self, review: FindingReview) -> str | None:
        return reverse("api-finding-review-mask", args=[review.pk]) if review.mask_key else None


class SeriesReviewOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    verdict = serializers.CharField()
    comment = serializers.CharField()
    user = serializers.CharField(source="user.username")
    created_at = serializers.DateTimeField()


def _denied(exc: Exception, series: Series) -> Exception:
    """A reviewer's refusal (a 403 on the audit trail) or a bad mask (a 400)."""
    if isinstance(exc, services.ReviewNotAllowed):
        return refuse(str(exc), series)
    return exceptions.ValidationError({"mask_png": [str(exc)]})


def _refuse_blinded(request: Request, series: Series) -> None:
    """A finding's reviews and corrected masks are the model's results, reviewed: a reader who
    reads the series blind (an active blinded annotation campaign) gets a 403, as for the
    result and its masks (``backend.scoring.apis``)."""
    if model_results_blinded(user=request.user, series_id=series.pk):
        raise exceptions.PermissionDenied(BLINDED)


class FindingReviewApi(ClinicalAPIView):
    """GET: a finding's review history, newest first. POST: accept, correct or reject it."""

    class FindingReviewInputSerializer(serializers.Serializer):
        action = serializers.ChoiceField(choices=FindingAction.choices)
        comment = serializers.CharField(max_length=1000, required=False, allow_blank=True)
        mask_png = serializers.CharField(
            required=False,
            max_length=6 * 1024 * 1024,
            help_text="Base64 PNG on the instance's grid (white = artifact); `correct` only.",
        )

    @extend_schema(responses=FindingReviewOutputSerializer(many=True))
    def get(self, request: Request, finding_id: int) -> Response:
        self.audit_action = AuditAction.VIEW
        finding, reviews = selectors.finding_review_list(user=request.user, finding_id=finding_id)
        _refuse_blinded(request, finding.instance.series)
        self.accessed([finding.instance.series])
        return Response(FindingReviewOutputSerializer(reviews, many=True).data)

    @extend_schema(
        request=FindingReviewInputSerializer, responses={201: FindingReviewOutputSerializer}
    )
    def post(self, request: Request, finding_id: int) -> Response:
        self.audit_action = AuditAction.ANNOTATE
        finding = finding_get(user=request.user, finding_id=finding_id)
        data = self.FindingReviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        png = None
        if data.validated_data.get("mask_png"):
            try:
                png = base64.b64decode(data.validated_data["mask_png"], validate=True)
            except (binascii.Error, ValueError):
                raise exceptions.ValidationError({"mask_png": ["not base64"]}) from None
        try:
            review = services.finding_review_create(
                user=request.user,
                finding=finding,
                action=data.validated_data["action"],
                comment=data.validated_data.get("comment", ""),
                mask_png=png,
            )
        except (services.ReviewNotAllowed, services.BadMask) as exc:
            raise _denied(exc, finding.instance.series) from None
        self.accessed([finding.instance.series])
        return Response(FindingReviewOutputSerializer(review).data, status=201)


class FindingReviewMaskApi(ClinicalAPIView):
    """One corrected mask version as a 1-bit PNG."""

    audit_action = AuditAction.VIEW

    @extend_schema(responses={(200, "image/png"): bytes})
    def get(self, request: Request, review_id: int) -> HttpResponse:
        review = selectors.finding_review_get(user=request.user, review_id=review_id)
        _refuse_blinded(request, review.finding.instance.series)
        self.accessed([review.finding.instance.series])
        if not review.mask_key:
            return HttpResponse(status=404)
        response = HttpResponse(store_get(review.mask_key), content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"  # a version never changes
        return response


class SeriesReviewApi(ClinicalAPIView):
    """GET: the series verdict history and each reviewed finding's history. POST: a verdict."""

    class SeriesReviewInputSerializer(serializers.Serializer):
        verdict = serializers.ChoiceField(choices=SeriesVerdict.choices)
        comment = serializers.CharField(max_length=1000, required=False, allow_blank=True)

    class SeriesReviewSummarySerializer(serializers.Serializer):
        series_id = serializers.UUIDField()
        verdict = serializers.CharField(allow_null=True)
        verdicts = SeriesReviewOutputSerializer(many=True)
        findings = serializers.DictField(child=FindingReviewOutputSerializer(many=True))

    @extend_schema(responses=SeriesReviewSummarySerializer)
    def get(self, request: Request, series_id: uuid.UUID) -> Response:
        self.audit_action = AuditAction.VIEW
        series, verdicts, by_finding = selectors.series_review_summary(
            user=request.user, series_id=series_id
        )
        self.accessed([series])
        out = {
            "series_id": series.pk,
            "verdict": verdicts[0].verdict if verdicts else None,
            "verdicts": verdicts,
            # The model's findings and their corrections: withheld from a blinded reader, as
            # the result itself is.
            "findings": {}
            if model_results_blinded(user=request.user, series_id=series.pk)
            else {str(k): v for k, v in by_finding.items()},
        }
        return Response(self.SeriesReviewSummarySerializer(out).data)

    @extend_schema(
        request=SeriesReviewInputSerializer, responses={201: SeriesReviewOutputSerializer}
    )
    def post(self, request: Request, series_id: uuid.UUID) -> Response:
        self.audit_action = AuditAction.ANNOTATE
        series = series_get(user=request.user, series_id=series_id)
        data = self.SeriesReviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            review: SeriesReview = services.series_review_create(
                user=request.user,
                series=series,
                verdict=data.validated_data["verdict"],
                comment=data.validated_data.get("comment", ""),
            )
        except services.ReviewNotAllowed as exc:
            raise _denied(exc, series) from None
        self.accessed([series])
        return Response(SeriesReviewOutputSerializer(review).data, status=201)
