"""DICOMweb under ``/dicomweb/``: STOW-RS, QIDO-RS and WADO-RS, scoped and audited like every API.

Only de-identified data is served (it is all we store): UIDs are the pseudonymous ones, and a
study of another site is a 404 exactly like a study that does not exist.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pydicom
from django.conf import settings
from django.db.models import Count
from django.http import HttpResponse, StreamingHttpResponse
from django.utils.cache import patch_vary_headers
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from backend.accounts.selectors import sender_for
from backend.audit.mixins import ClinicalAPIView
from backend.audit.models import AuditAction
from backend.audit.services import AuditTarget
from backend.dicomweb import multipart, qido
from backend.dicomweb.metadata import (
    StoredFileMissing,
    metadata_response_body,
    metadata_texts,
)
from backend.dicomweb.render import render_png
from backend.ingest.services import IngestOutcome, in_one_batch, series_ingest
from backend.storage.store import StoreFull, store_get
from backend.studies import selectors
from backend.studies.models import Instance, Series, Study
from ml.decode import DecodeError, pixel_array

DICOM_JSON = "application/dicom+json"
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
PROCESSING_FAILURE = 0xC000


class AnyAccept(BaseContentNegotiation):
    """DICOMweb clients ask for multipart/related and image types that DRF's renderers do not
    know; these views build their responses themselves."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


def _a(vr: str, *values: Any) -> dict[str, Any]:
    clean = [v for v in values if v not in (None, "")]
    return {"vr": vr, "Value": clean} if clean else {"vr": vr}


def _json(payload: Any, status: int = 200) -> HttpResponse:
    import json

    return HttpResponse(json.dumps(payload), status=status, content_type=DICOM_JSON)


def _page(request: Request, qs: Any) -> list[Any]:
    try:
        offset = max(int(request.query_params.get("offset", 0)), 0)
        limit = min(max(int(request.query_params.get("limit", 100)), 1), 1000)
    except ValueError:
        raise exceptions.ValidationError("limit and offset must be integers") from None
    return list(qs[offset : offset + limit])


class DicomWebView(ClinicalAPIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = AnyAccept
    schema = None  # described by DICOM PS3.18, not by our OpenAPI schema

    def base(self, request: Request) -> str:
        return request.build_absolute_uri("/dicomweb")

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, DecodeError):
            exc = PixelsUndecodable(f"the stored pixel data cannot be decoded: {exc}")
        return super().handle_exception(exc)


class PixelsUndecodable(exceptions.APIException):
    """A stored instance's compressed pixels that the decoder refused, crashed on or took too
    long over (out of process: the web process goes on serving)."""

    status_code = 500
    default_code = "undecodable"


def _pn(value: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": value}]} if value else {"vr": "PN"}


def _study_json(study: Study, base: str) -> dict[str, Any]:
    modalities = sorted({s.modality for s in study.series.all()})
    return {
        "0020000D": _a("UI", study.study_uid),
        "00081030": _a("LO", study.description),
        "00080061": _a("CS", *modalities),
        "00201206": _a("IS", study.n_series),  # type: ignore[attr-defined]
        "00201208": _a("IS", study.n_instances),  # type: ignore[attr-defined]
        # As the de-identified files hold them: the shifted date, the patient's pseudonym;
        # AccessionNumber, StudyID and the referring physician are removed (empty).
        "00080020": _a("DA", study.study_date.strftime("%Y%m%d") if study.study_date else None),
        "00080030": _a("TM", study.study_time),
        "00080050": _a("SH"),
        "00200010": _a("SH"),
        "00080090": {"vr": "PN"},
        "00100010": _pn(study.patient_pseudonym),
        "00100020": _a("LO", study.patient_pseudonym),
        "00081190": _a("UR", f"{base}/studies/{study.study_uid}"),
    }


def _series_json(series: Series, base: str) -> dict[str, Any]:
    return {
        "0020000D": _a("UI", series.study.study_uid),
        "0020000E": _a("UI", series.series_uid),
        "00080060": _a("CS", series.modality),
        "00200011": _a("IS", series.series_number),
        "0008103E": _a("LO", series.description),
        "00201209": _a("IS", series.n_instances),  # type: ignore[attr-defined]
        "00081190": _a("UR", f"{base}/studies/{series.study.study_uid}/series/{series.series_uid}"),
    }


def _instance_json(instance: Instance, base: str) -> dict[str, Any]:
    study_uid, series_uid = instance.series.study.study_uid, instance.series.series_uid
    return {
        "00080016": _a("UI", instance.sop_class_uid),
        "00080018": _a("UI", instance.sop_uid),
        "0020000D": _a("UI", study_uid),
        "0020000E": _a("UI", series_uid),
        "00200013": _a("IS", instance.instance_number),
        "00280010": _a("US", instance.rows),
        "00280011": _a("US", instance.columns),
        "00280008": _a("IS", instance.frame_count),
        "00081190": _a(
            "UR", f"{base}/studies/{study_uid}/series/{series_uid}/instances/{instance.sop_uid}"
        ),
    }


# --- QIDO-RS ---------------------------------------------------------------------------------


def _qido_response(results: list[dict[str, Any]], query: qido.Query) -> HttpResponse:
    response = _json(results)
    warning = query.warning()
    if warning:
        response["Warning"] = warning
    return response


def _first_instances(user: Any, model: Any, owner: str, ids: list[Any]) -> dict[Any, Instance]:
    """The first image (series number, then instance number) of each study or series
    (``model`` Study or Series, ``owner`` the path from an instance to it), with its metadata
    row: one subquery per study or series, over the instances ``user`` may see; never a DICOM
    SEG (a reader reading blind must not learn the model's segments from it)."""
    from django.db.models import OuterRef, Subquery

    first = (
        selectors.instance_search(user=user)
        .filter(**{owner: OuterRef("pk")})
        .exclude(series__modality=selectors.SEG_MODALITY)
        .order_by("series__series_number", "series__received_at", "instance_number", "sop_uid")
        .values("pk")[:1]
    )
    chosen = dict(
        model.objects.filter(pk__in=ids).annotate(first=Subquery(first)).values_list("pk", "first")
    )
    rows = Instance.objects.filter(pk__in=[p for p in chosen.values() if p]).select_related(
        "metadata"
    )
    by_pk = {i.pk: i for i in rows}
    return {owner_id: by_pk[pk] for owner_id, pk in chosen.items() if pk in by_pk}


def _include(
    results: list[dict[str, Any]],
    owners: list[Any],
    query: qido.Query,
    firsts: dict[Any, Instance] | None,
    all_tags: frozenset[str] | None,
) -> None:
    """``includefield``: the attributes our rows do not carry, from each result's own instance
    (``firsts`` None: ``owners`` are instances) or its first one."""
    if not query.includes:
        return
    sources = owners if firsts is None else [firsts.get(o.pk) for o in owners]
    present = [i for i in sources if i is not None]
    try:
        texts = dict(zip([i.pk for i in present], metadata_texts(present), strict=True))
    except StoredFileMissing:
        raise StoredImagesUnreadable() from None
    for result, source in zip(results, sources, strict=True):
        qido.add_included(
            result,
            query,
            texts.get(source.pk) if source is not None else None,
            all_tags=all_tags,
        )


class QidoStudiesView(DicomWebView):
    audit_action = AuditAction.LIST

    def get(self, request: Request) -> HttpResponse:
        query = qido.parse(request.query_params, "study")
        qs = qido.apply(selectors.study_search(user=request.user), query, "study").annotate(
            n_series=Count("series", distinct=True), n_instances=Count("series__instances")
        )
        studies = _page(request, qs.prefetch_related("series"))
        self.accessed(studies)
        results = [_study_json(s, self.base(request)) for s in studies]
        if query.includes:
            firsts = _first_instances(request.user, Study, "series__study", [s.pk for s in studies])
            _include(results, studies, query, firsts, qido.STUDY_ALL)
        return _qido_response(results, query)


class QidoSeriesView(DicomWebView):
    audit_action = AuditAction.LIST

    def get(self, request: Request, study_uid: str | None = None) -> HttpResponse:
        if study_uid:
            selectors.study_by_uid(user=request.user, study_uid=study_uid)
        query = qido.parse(request.query_params, "series")
        qs = qido.apply(
            selectors.series_search(user=request.user, study_uid=study_uid), query, "series"
        ).annotate(n_instances=Count("instances"))
        series = _page(request, qs)
        self.accessed(series, per_study=True)
        results = [_series_json(s, self.base(request)) for s in series]
        if query.includes:
            firsts = _first_instances(request.user, Series, "series", [s.pk for s in series])
            _include(results, series, query, firsts, qido.SERIES_ALL | qido.STUDY_ALL)
        return _qido_response(results, query)


class QidoInstancesView(DicomWebView):
    audit_action = AuditAction.LIST

    def get(
        self, request: Request, study_uid: str | None = None, series_uid: str | None = None
    ) -> HttpResponse:
        if study_uid and series_uid:
            selectors.series_by_uid(user=request.user, study_uid=study_uid, series_uid=series_uid)
        elif study_uid:
            selectors.study_by_uid(user=request.user, study_uid=study_uid)
        query = qido.parse(request.query_params, "instance")
        qs = qido.apply(
            selectors.instance_search(
                user=request.user, study_uid=study_uid, series_uid=series_uid
            ),
            query,
            "instance",
        )
        if query.includes:
            qs = qs.select_related("metadata")
        instances = _page(request, qs)
        self.accessed(instances, per_study=True)
        results = [_instance_json(i, self.base(request)) for i in instances]
        _include(results, instances, query, None, None)
        return _qido_response(results, query)


# --- WADO-RS ---------------------------------------------------------------------------------


def _dataset(instance: Instance) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(store_get(instance.storage_key)))


def _frame_bytes(ds: pydicom.Dataset, number: int) -> bytes:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= number <= frames:
        raise exceptions.NotFound(f"frame {number} does not exist (1..{frames})")
    if str(ds.file_meta.TransferSyntaxUID) in UNCOMPRESSED:
        size = len(ds.PixelData) // frames
        size -= size % 2 if len(ds.PixelData) % frames else 0
        return bytes(ds.PixelData[(number - 1) * size : number * size])
    return pixel_array(ds, number - 1 if frames > 1 else None).tobytes()


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(n) for n in text.split(",")]
    except ValueError:
        raise exceptions.ValidationError("frame numbers must be integers") from None
    if not numbers or len(numbers) > 256:
        raise exceptions.ValidationError("ask for 1 to 256 frames")
    return numbers


class WadoInstanceView(DicomWebView):
    audit_action = AuditAction.DOWNLOAD

    def get(self, request: Request, study_uid: str, series_uid: str, sop_uid: str) -> HttpResponse:
        instance = selectors.instance_by_uid(
            user=request.user, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid
        )
        body, content_type = multipart.encode(
            [store_get(instance.storage_key)], "application/dicom"
        )
        self.accessed([instance])
        return HttpResponse(body, content_type=content_type)


def _study_instances(
    request: Request, study_uid: str, *, metadata: bool
) -> tuple[Study, list[Instance]]:
    """A study and the instances of it the caller may see (in order: series, then instance
    number), with their metadata rows when asked; a study of another site is a 404."""
    study = selectors.study_by_uid(user=request.user, study_uid=study_uid)
    qs = selectors.instance_search(user=request.user, study_uid=study_uid)
    if metadata:
        qs = qs.select_related("metadata")
    order = ("series__series_number", "series__received_at", "instance_number", "sop_uid")
    return study, list(qs.order_by(*order))


class WadoStudyView(DicomWebView):
    """``GET /dicomweb/studies/{study}``: every instance of the study (WADO-RS retrieve)."""

    audit_action = AuditAction.DOWNLOAD

    def get(self, request: Request, study_uid: str) -> StreamingHttpResponse:
        study, instances = _study_instances(request, study_uid, metadata=False)
        # A study may be gigabytes: its files go out one at a time, never all in memory.
        chunks, content_type = multipart.encode_stream(
            (store_get(i.storage_key) for i in instances), "application/dicom"
        )
        self.accessed([study])
        return StreamingHttpResponse(chunks, content_type=content_type)


class WadoSeriesView(DicomWebView):
    audit_action = AuditAction.DOWNLOAD

    def get(self, request: Request, study_uid: str, series_uid: str) -> HttpResponse:
        series = selectors.series_by_uid(
            user=request.user, study_uid=study_uid, series_uid=series_uid
        )
        instances = list(series.instances.order_by("instance_number", "sop_uid"))
        body, content_type = multipart.encode(
            (store_get(i.storage_key) for i in instances), "application/dicom"
        )
        self.accessed([series])
        return HttpResponse(body, content_type=content_type)


class StoredImagesUnreadable(exceptions.APIException):
    status_code = 500
    default_detail = "The stored images of this series cannot be read."
    default_code = "stored_images_unreadable"


def _metadata_response(request: Request, instances: list[Instance]) -> HttpResponse:
    """The metadata, or a 304 when the browser's copy (its ETag) is still the same; the scope
    check and the audit row happened before either."""
    try:
        body = metadata_response_body(metadata_texts(instances))
    except StoredFileMissing:
        raise StoredImagesUnreadable() from None
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    if etag in {t.strip() for t in request.headers.get("If-None-Match", "").split(",")}:
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(body, content_type=DICOM_JSON)
    response["ETag"] = etag
    return response


class MetadataView(DicomWebView):
    """Metadata may stay in the browser's own cache (never a shared one), but it is asked for
    again at every use (``no-cache``): a series still receiving grows, and each access is scoped
    and audited. An unchanged answer is a 304 without a body."""

    audit_action = AuditAction.VIEW

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        if response.status_code in (200, 304):
            response["Cache-Control"] = "private, no-cache"
            patch_vary_headers(response, ("Authorization", "Cookie"))
        return response


class WadoInstanceMetadataView(MetadataView):
    def get(self, request: Request, study_uid: str, series_uid: str, sop_uid: str) -> HttpResponse:
        instance = selectors.instance_by_uid(
            user=request.user, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid
        )
        self.accessed([instance])
        return _metadata_response(request, [instance])


class WadoSeriesMetadataView(MetadataView):
    def get(self, request: Request, study_uid: str, series_uid: str) -> HttpResponse:
        series = selectors.series_by_uid(
            user=request.user, study_uid=study_uid, series_uid=series_uid
        )
        instances = list(
            series.instances.select_related("metadata").order_by("instance_number", "sop_uid")
        )
        self.accessed([series])
        return _metadata_response(request, instances)


class WadoStudyMetadataView(MetadataView):
    def get(self, request: Request, study_uid: str) -> HttpResponse:
        study, instances = _study_instances(request, study_uid, metadata=True)
        self.accessed([study])
        return _metadata_response(request, instances)


class WadoFramesView(DicomWebView):
    audit_action = AuditAction.DOWNLOAD

    def get(
        self, request: Request, study_uid: str, series_uid: str, sop_uid: str, frames: str
    ) -> HttpResponse:
        instance = selectors.instance_by_uid(
            user=request.user, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid
        )
        ds = _dataset(instance)
        payloads = [_frame_bytes(ds, n) for n in _frame_numbers(frames)]
        body, content_type = multipart.encode(payloads, "application/octet-stream")
        self.accessed([instance])
        response = HttpResponse(body, content_type=content_type)
        # A stored instance's pixels never change under its URL: this browser may keep them for
        # the session (the audit mixin adds Vary on the credentials), so the viewer's preview
        # and Cornerstone3D fetch the opening frame once. The first fetch is audited.
        response["Cache-Control"] = "private, max-age=3600"
        patch_vary_headers(response, ("Accept",))
        return response


class WadoRenderedView(DicomWebView):
    """``rendered`` (full size) and ``thumbnail`` (at most 128 px) PNGs of an instance or a frame;
    a series thumbnail shows its middle instance."""

    audit_action = AuditAction.VIEW
    max_size: int | None = None

    def get(
        self,
        request: Request,
        study_uid: str,
        series_uid: str,
        sop_uid: str | None = None,
        frames: str | None = None,
    ) -> HttpResponse:
        if sop_uid is None:
            series = selectors.series_by_uid(
                user=request.user, study_uid=study_uid, series_uid=series_uid
            )
            ordered = list(series.instances.order_by("instance_number", "sop_uid"))
            if not ordered:
                raise exceptions.NotFound("the series has no instances yet")
            instance = ordered[len(ordered) // 2]
        else:
            instance = selectors.instance_by_uid(
                user=request.user, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid
            )
        number = _frame_numbers(frames)[0] if frames else 1
        ds = _dataset(instance)
        if not 1 <= number <= int(ds.get("NumberOfFrames", 1) or 1):
            raise exceptions.NotFound(f"frame {number} does not exist")
        png = render_png(ds, number - 1, max_size=self.max_size)
        self.accessed([instance])
        return HttpResponse(png, content_type="image/png")


class WadoThumbnailView(WadoRenderedView):
    max_size = 128


# --- STOW-RS ---------------------------------------------------------------------------------


class StowView(DicomWebView):
    """Store instances: each part is de-identified and ingested on its own; the answer lists
    what was stored (ReferencedSOPSequence) and what was refused, with the reason
    (FailedSOPSequence)."""

    audit_action = AuditAction.CREATE

    def post(self, request: Request, study_uid: str | None = None) -> HttpResponse:
        sender = sender_for(
            user=request.user,
            requested=request.query_params.get("site") or request.headers.get("X-ArtiScan-Site"),
        )
        site = sender.site
        if site is None:
            raise exceptions.PermissionDenied(
                "You may not send images, or you send for several sites: name one with ?site="
            )
        content_type = request.headers.get("Content-Type", "")
        # At most this many parts (of any type): a body of thousands of tiny parts would each be
        # refused and quarantined (security checklist M-12). Counted as they are found, so such
        # a body is turned away before any part is kept, and with nothing stored.
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        try:
            boundary = multipart.boundary_of(content_type)
            root = multipart.root_type_of(content_type)
            bodies = []
            for count, (headers, part) in enumerate(
                multipart.parts(request.body, boundary), start=1
            ):
                if count > limit:
                    return _json(
                        {"error": f"more than {limit} parts in one request: send them in several"},
                        status=400,
                    )
                kind = headers.get("content-type", root).split(";")[0].strip().lower()
                if kind == "application/dicom":
                    bodies.append(part)
        except multipart.MultipartError as exc:
            return _json({"error": str(exc)}, status=415 if "Content-Type" in str(exc) else 400)
        if not bodies:
            return _json({"error": "no application/dicom parts"}, status=400)
        base = self.base(request)

        def audit(batch: list[IngestOutcome]) -> None:
            self.audit_now(
                [
                    AuditTarget("instance", o.instance_id, site.pk, o.study_uid)
                    for o in batch
                    if o.status != "rejected"
                ],
                per_study=True,
                roles_by_site=sender.roles_by_site,
            )

        # One batch: each part is de-identified on its own, the accepted ones are stored with
        # one durable sync and recorded in one transaction (series_ingest). The answer and the
        # audit come from the outcomes: no second look at the rows just written. A request of
        # one batch (the usual: one slice, or a few dozen) writes its audit rows in that
        # transaction (one commit, not two); a longer one once, after the last batch.
        one_batch = in_one_batch(bodies)
        try:
            outcomes = series_ingest(
                site=site,
                files=bodies,
                source="stow",
                recorded=audit if one_batch else None,
                study_uid=study_uid,
            )
        except StoreFull as full:
            response = _json({"error": str(full)}, status=503)
            response["Retry-After"] = "300"
            return response
        stored, failed, accessed = [], [], []
        for outcome in outcomes:
            if outcome.status == "rejected":
                failed.append(
                    {"00081197": _a("US", PROCESSING_FAILURE), "00000902": _a("LO", outcome.reason)}
                )
                continue
            accessed.append(
                AuditTarget("instance", outcome.instance_id, site.pk, outcome.study_uid)
            )
            url = (
                f"{base}/studies/{outcome.study_uid}/series/{outcome.series_uid}"
                f"/instances/{outcome.sop_uid}"
            )
            stored.append(
                {
                    "00081150": _a("UI", outcome.sop_class_uid),
                    "00081155": _a("UI", outcome.sop_uid),
                    "00081190": _a("UR", url),
                }
            )
        if not one_batch:
            self.accessed_targets(accessed, per_study=True)
        payload: dict[str, Any] = {}
        if stored:
            payload["00081199"] = {"vr": "SQ", "Value": stored}
        if failed:
            payload["00081198"] = {"vr": "SQ", "Value": failed}
        status = 200 if not failed else (202 if stored else 409)
        return _json(payload, status=status)


class StowStudyView(WadoStudyView, StowView):
    """``/dicomweb/studies/{study}``: GET retrieves the study (WADO-RS); POST is STOW-RS
    restricted to one study. For a POST ``{study}`` is the sender's StudyInstanceUID (the one in
    its files); a part of another study is refused (FailedSOPSequence, with the reason) and not
    stored."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self.audit_action = AuditAction.CREATE if request.method == "POST" else AuditAction.DOWNLOAD
        super().initial(request, *args, **kwargs)


class StudiesRootView(QidoStudiesView, StowView):
    """``/dicomweb/studies``: GET searches (QIDO-RS), POST stores (STOW-RS)."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self.audit_action = AuditAction.CREATE if request.method == "POST" else AuditAction.LIST
        super().initial(request, *args, **kwargs)
