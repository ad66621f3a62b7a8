"""Scoring series with the artifact model: the one place the Django side calls ``ml``.

Scoring is claim → compute → write:

- claim (a short transaction holding the series row lock): take up to :data:`CLAIM_BATCH` of
  the series' instances that this model version has not scored, that nobody else holds and that
  are not quarantined; count one more attempt on each (:class:`SliceAttempt`) and commit, so a
  worker killed while computing still leaves the count behind;
- compute (no lock held, so other workers claim and score other slices of the same series in
  parallel): the model, masks to the store, findings in memory;
- write (a short transaction holding the series row lock): one ``InstanceScore`` per instance
  and model version (a unique key; a slice someone else wrote meanwhile is skipped), the
  findings, the series summary and the region-of-interest index; events on commit.

A slice that was claimed before without a result (its worker died, or the pipeline raised) is
a *suspect*: it is scored alone, so a crash is pinned on one slice; after
``ARTISCAN_SCORING_MAX_ATTEMPTS`` attempts it is quarantined with its reason while the rest of
the series is scored; a slice refused by what it is (:class:`ml.pipeline.InputRefused`: a
multi-frame or colour image, an unusable header) is quarantined at its first failure. Late
slices are scored by a later task; a redelivered task finds nothing left to do.

Model registry: ``ARTISCAN_MODEL_WEIGHTS`` (or the shipped default) is only the *initial*
deployed version, registered when no version is deployed; after that the deployed version
changes only by :func:`model_promote` and :func:`model_rollback`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pydicom
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Subquery
from django.utils import timezone

from backend.accounts.models import User
from backend.audit.models import AuditAction
from backend.audit.services import AuditTarget, audit_record
from backend.realtime.services import event_publish, events_publish
from backend.scoring.advice import AdviceHeader, advise
from backend.scoring.index import (
    NONDIAGNOSTIC_BELOW,
    FindingShare,
    polygon_area,
    polygon_raster,
    series_reason,
    series_suitability,
    slice_reason,
    slice_suitability,
)
from backend.scoring.masks import mask_get, mask_key, mask_png
from backend.scoring.models import (
    Finding,
    InstanceScore,
    ModelPromotion,
    ModelVersion,
    PromotionKind,
    RescoreJob,
    RunStatus,
    ScoringRun,
    SeriesRegionOfInterest,
    SliceAttempt,
)
from backend.scoring.selectors import series_roi
from backend.storage.crypto import DecryptionError, UnknownKey
from backend.storage.store import store_exists, store_get, store_put, store_put_many
from backend.studies.models import Instance, Series, SeriesStatus

logger = logging.getLogger(__name__)

__all__ = ["NONDIAGNOSTIC_BELOW"]

CLAIM_BATCH = 16
"""Slices one worker claims at a time: a batch big enough for the model, small enough that
several workers share a long series."""


class ModelRegistryError(ValueError):
    """A registry operation that cannot be done (nothing to roll back to, a name clash, …)."""


class RoiError(ValueError):
    """A region of interest that does not fit the series (outside the image, no area, …)."""


class SlicesPending(Exception):
    """Some slices failed this time and will be tried again (the task retries with a delay)."""


class NotTheSlices(Exception):
    """Scoring failed for a reason outside the slices: the model could not be loaded (weights
    missing on this host, a GPU out of memory), the store could not be reached or written (an
    outage, a full disk), the database went away. No slice is charged an attempt for it — three
    such failures within seconds must not quarantine healthy images for good; the claims are
    released and the cause (``__cause__``) is raised to the task, which retries a transient one
    and otherwise leaves the series to the unscored sweep."""


# --- model registry -----------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_weights_path() -> Path:
    """The configured weight file (``ARTISCAN_MODEL_WEIGHTS``, or the shipped default)."""
    from ml.pipeline import resolve_weights

    return resolve_weights(settings.ARTISCAN_MODEL_WEIGHTS or None)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name.rsplit(".", 1)[0] + ".thresholds.json")


def _shipped(path: Path) -> bool:
    from ml.pipeline import WEIGHTS_DIR

    return path.resolve().is_relative_to(WEIGHTS_DIR.resolve())


def model_version_register(
    *,
    weights_path: Path,
    name: str,
    version: str,
    metrics: dict[str, Any],
    card: str = "",
    registered_by: User | None = None,
) -> ModelVersion:
    """Register a weight file (``.keras`` or ``.onnx``) as a model version; idempotent by sha256.

    Weights shipped with the code (``ml/weights/``) are referenced where they are; any other
    file is copied into the store (with its ``.thresholds.json`` sidecar), so every worker host
    can load it and the original may go away. Registering does not deploy.
    """
    from ml import ARTIFACT_TYPES

    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise ModelRegistryError(f"no weight file at {weights_path}")
    digest = _sha256(weights_path)
    existing = ModelVersion.objects.filter(sha256=digest).first()
    if existing is not None:
        return existing
    if ModelVersion.objects.filter(name=name, version=version).exists():
        raise ModelRegistryError(f"{name} {version} is registered with other weights")
    if _shipped(weights_path):
        key = str(weights_path.resolve())
    else:
        key = f"models/{digest}/{weights_path.name}"
        store_put(key, weights_path.read_bytes())
        sidecar = _sidecar(weights_path)
        if sidecar.is_file():
            store_put(f"models/{digest}/{sidecar.name}", sidecar.read_bytes())
    try:
        with transaction.atomic():
            return ModelVersion.objects.create(
                name=name[:64],
                version=version[:32],
                sha256=digest,
                weights_key=key,
                classes=list(ARTIFACT_TYPES),
                metrics=metrics,
                card=card,
                registered_by=registered_by,
            )
    except IntegrityError:  # registered by someone else at the same moment
        return ModelVersion.objects.get(sha256=digest)


def model_weights_local(model_version: ModelVersion) -> Path:
    """A local path of the version's weights: the shipped file, or a verified copy from the store
    cached under ``VAR_DIR/model-cache/`` (the pipeline cache is keyed by this path)."""
    key = model_version.weights_key
    if not key.startswith("models/"):
        return Path(key)
    local = Path(settings.VAR_DIR) / "model-cache" / model_version.sha256[:16] / Path(key).name
    if local.is_file():
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    data = store_get(key)
    if hashlib.sha256(data).hexdigest() != model_version.sha256:
        raise ModelRegistryError(f"the stored weights of {model_version} do not match their sha256")
    sidecar_key = str(_sidecar(Path(key)))
    if store_exists(sidecar_key):
        _write_atomic(_sidecar(local), store_get(sidecar_key))
    _write_atomic(local, data)
    return local


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def model_version_deployed() -> ModelVersion:
    """The deployed model version. When none is deployed yet, the configured weight file
    (``ARTISCAN_MODEL_WEIGHTS`` or the shipped default) is registered and deployed as the initial
    default; afterwards the setting is not consulted, so it never undoes a promotion."""
    deployed = ModelVersion.objects.filter(is_deployed=True).first()
    if deployed is not None:
        return deployed
    path = model_weights_path()
    digest = _sha256(path)
    version = model_version_register(
        weights_path=path, name=path.stem, version=digest[:12], metrics={}
    )
    try:
        with transaction.atomic():
            if ModelVersion.objects.filter(is_deployed=True).exists():
                raise IntegrityError("deployed meanwhile")
            ModelVersion.objects.filter(pk=version.pk).update(is_deployed=True)
            ModelPromotion.objects.create(
                kind=PromotionKind.INITIAL,
                model_version=version,
                reason="initial default: the configured weight file (ARTISCAN_MODEL_WEIGHTS)",
            )
    except IntegrityError:
        pass
    return ModelVersion.objects.get(is_deployed=True)


def _audit_model(user: User | None, action: AuditAction, version: ModelVersion) -> None:
    audit_record(
        user=user if user is not None else AnonymousUser(),
        action=action,
        targets=[AuditTarget("model_version", str(version.pk), None)],
    )


def _deploy(
    *, model_version: ModelVersion, user: User | None, reason: str, kind: PromotionKind
) -> ModelPromotion:
    if not reason.strip():
        raise ModelRegistryError("a reason is required")
    with transaction.atomic():
        list(ModelVersion.objects.select_for_update().filter(is_deployed=True))
        previous = ModelVersion.objects.filter(is_deployed=True).first()
        if previous is not None and previous.pk == model_version.pk:
            raise ModelRegistryError(f"{model_version} is already deployed")
        ModelVersion.objects.filter(is_deployed=True).update(is_deployed=False)
        ModelVersion.objects.filter(pk=model_version.pk).update(is_deployed=True)
        model_version.is_deployed = True
        promotion = ModelPromotion.objects.create(
            kind=kind,
            model_version=model_version,
            previous=previous,
            promoted_by=user,
            reason=reason.strip()[:500],
        )
        _current_runs_switch(model_version)
        _audit_model(user, AuditAction.CREATE, model_version)
    logger.info("model %s: %s (was %s)", kind, model_version, previous)
    return promotion


def _current_runs_switch(model_version: ModelVersion) -> None:
    """Series the newly deployed version has scored show that run again (a rollback restores
    the old results); the others keep theirs until re-scored."""
    runs = ScoringRun.objects.filter(series=OuterRef("pk"), model_version=model_version)
    Series.objects.filter(Exists(runs)).update(
        current_run=Subquery(runs.values("pk")[:1]),
        suitability=Subquery(runs.values("suitability")[:1]),
    )
    scores = InstanceScore.objects.filter(instance=OuterRef("pk"), run__model_version=model_version)
    # An Enhanced MR instance has a score per frame: its own is its worst frame's.
    Instance.objects.filter(Exists(scores)).update(
        suitability=Subquery(scores.order_by("suitability").values("suitability")[:1])
    )


def model_promote(*, model_version: ModelVersion, user: User | None, reason: str) -> ModelPromotion:
    """Deploy ``model_version`` (one deployed at a time); records who, from which version, why."""
    return _deploy(
        model_version=model_version, user=user, reason=reason, kind=PromotionKind.PROMOTE
    )


def model_rollback(*, user: User | None, reason: str) -> ModelPromotion:
    """Deploy again the version that was deployed before the current one was promoted.

    Walks back through the promotions (rollbacks themselves are skipped), so rolling back twice
    goes two versions back.
    """
    current = model_version_deployed()
    promoted = (
        ModelPromotion.objects.filter(model_version=current)
        .exclude(kind=PromotionKind.ROLLBACK)
        .order_by("-created_at", "-id")
        .first()
    )
    if promoted is None or promoted.previous is None:
        raise ModelRegistryError(f"{current} has no earlier version to roll back to")
    return _deploy(
        model_version=promoted.previous, user=user, reason=reason, kind=PromotionKind.ROLLBACK
    )


def model_version_find(*, label: str, name: str | None = None) -> ModelVersion:
    """A version by ``version`` (with ``name`` when given), or by ``"name version"``."""
    qs = ModelVersion.objects.all()
    if name:
        qs = qs.filter(name=name, version=label)
    else:
        found = [v for v in ModelVersion.objects.all() if label in (v.version, str(v))]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ModelRegistryError(f"{label!r} names several model versions: give the name too")
        qs = qs.none()
    version = qs.first()
    if version is None:
        raise ModelRegistryError(f"no model version {name + ' ' if name else ''}{label}")
    return version


# --- re-scoring on demand -----------------------------------------------------------------


def series_score_enqueue(*, series_id: uuid.UUID | str) -> None:
    """Ask for the scoring of ``series_id``'s waiting slices once the current transaction
    commits. (Ingest hands its requests to ``backend.ingest.dispatch`` instead, which publishes
    them off the request's path, coalesced per series.)"""
    sid = str(series_id)
    transaction.on_commit(lambda: series_score_publish(series_id=sid))


def series_score_publish(*, series_id: uuid.UUID | str) -> None:
    """Publish one scoring request for ``series_id`` now (call it after the commit of the
    slices it is for). The task scores whatever the series has waiting, so one request covers
    every slice committed before it; a request that finds nothing to do is cheap."""
    from backend.scoring.tasks import series_score_task

    series_score_task.delay(str(series_id))


def series_rescore(
    *,
    series_ids: Sequence[uuid.UUID | str],
    model_version: ModelVersion | None = None,
    requested_by: User | None = None,
) -> RescoreJob:
    """Score ``series_ids`` with ``model_version`` (default: the deployed one) on the gpu queue.

    The runs of other versions stay as they are (readable with their version); progress is
    :func:`rescore_job_refresh`.
    """
    model_version = model_version or model_version_deployed()
    ids = [str(s) for s in dict.fromkeys(str(s) for s in series_ids)]
    job = RescoreJob.objects.create(
        model_version=model_version, series_ids=ids, total=len(ids), requested_by=requested_by
    )
    if not ids:
        RescoreJob.objects.filter(pk=job.pk).update(finished_at=timezone.now())
        job.finished_at = timezone.now()
        return job
    from backend.scoring.tasks import series_score_task

    version_id, job_id = model_version.pk, str(job.pk)

    def send() -> None:
        for sid in ids:
            series_score_task.delay(sid, version_id, job_id)

    transaction.on_commit(send)
    return job


def _pending_instances(model_version: ModelVersion) -> Any:
    """Instances without a score of ``model_version`` and not quarantined for it."""
    scored = InstanceScore.objects.filter(instance=OuterRef("pk"), run__model_version=model_version)
    quarantined = SliceAttempt.objects.filter(
        instance=OuterRef("pk"), model_version=model_version, quarantined=True
    )
    return Instance.objects.exclude(Exists(scored)).exclude(Exists(quarantined))


def rescore_job_refresh(*, job_id: uuid.UUID | str) -> RescoreJob:
    """Recount ``done`` (series with nothing left to score for the job's version): idempotent."""
    job = RescoreJob.objects.get(pk=job_id)
    pending = set(
        _pending_instances(job.model_version)
        .filter(series_id__in=job.series_ids)
        .values_list("series_id", flat=True)
        .distinct()
    )
    done = job.total - len(pending)
    finished = timezone.now() if done >= job.total else None
    RescoreJob.objects.filter(pk=job.pk).update(done=done, finished_at=finished)
    job.done, job.finished_at = done, finished
    return job


# --- scoring ------------------------------------------------------------------------------


@dataclass
class _Scored:
    """One scored slice: a classic instance, or one frame of a multi-frame instance."""

    instance: Instance
    frame: int  # 1-based
    suitability: float
    reason: str
    findings: list[Finding]
    masks: list[np.ndarray] = field(default_factory=list)
    """The findings' masks, bit-packed along the columns (:func:`_unpack`): a claim of a long
    Enhanced MR instance holds them all until it is written."""


def _unpack(packed: np.ndarray, columns: int) -> np.ndarray:
    return np.unpackbits(packed, axis=1, count=columns)


def slice_label(instance_number: int | None, frame: int, frame_count: int) -> str:
    """How the reasons name a slice: its InstanceNumber, with the frame for a multi-frame one."""
    number = "?" if instance_number is None else str(instance_number)
    return number if frame_count <= 1 else f"{number} frame {frame}"


@dataclass
class _Claim:
    run: ScoringRun
    instances: list[Instance]
    quarantined: list[Instance]


def _advice_header(instance: Instance, frame: dict[str, Any] | None = None) -> AdviceHeader:
    """The instance's acquisition values; ``frame``: a frame's own (``ml.header.frame_values``
    of an Enhanced MR image, where echo time or bandwidth may change from frame to frame)
    take their place where the frame has them."""
    own = frame or {}

    def value(keyword: str, default: float | None) -> float | None:
        found = own.get(keyword)
        try:
            return default if found is None else float(found)
        except (TypeError, ValueError):
            return default

    return AdviceHeader(
        field_strength_t=value("MagneticFieldStrength", instance.field_strength_t),
        pixel_bandwidth_hz=value("PixelBandwidth", instance.pixel_bandwidth_hz),
        phase_encode=instance.phase_encode_direction,
        rows=instance.rows,
        columns=instance.columns,
        spacing_row_mm=instance.pixel_spacing_row_mm,
        spacing_col_mm=instance.pixel_spacing_col_mm,
        slice_thickness_mm=value("SliceThickness", instance.slice_thickness_mm),
        te_ms=value("EchoTime", instance.echo_time_ms),
        tr_ms=value("RepetitionTime", instance.repetition_time_ms),
        ti_ms=value("InversionTime", instance.inversion_time_ms),
    )


_FRAME_ADVICE = (
    "MagneticFieldStrength", "PixelBandwidth", "SliceThickness", "EchoTime", "RepetitionTime",
    "InversionTime",
)  # fmt: skip


def _head_masks(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    from ml.simulate._common import head_and_reference

    heads = []
    for image in images:
        head, _ = head_and_reference(image[None])
        heads.append(head[0])
    return heads


class _Slices(NamedTuple):
    """The slices of a claim, in order: a multi-frame instance gives one per frame."""

    instances: list[Instance]
    datasets: list[Any]
    frames: list[int]  # 0-based, as ml.pipeline takes them
    images: list[Sequence[np.ndarray]]  # each slice's decoded frames (made float32 when read)
    advice: list[dict[str, Any] | None]  # a frame's own acquisition values (multi-frame)


def _decode(instances: list[Instance]) -> _Slices:
    from ml.header import frame_count, frame_values
    from ml.pipeline import frame_pixels, pixels

    out = _Slices([], [], [], [], [])
    for instance in instances:
        try:
            blob = store_get(instance.storage_key)
        except UnknownKey as exc:  # this host lacks a key of the keyring (a rotation)
            raise NotTheSlices("the store's key ring lacks a key") from exc
        except (FileNotFoundError, DecryptionError):
            raise  # this slice's file is gone or altered: the slice's own failure
        except Exception as exc:
            raise NotTheSlices(f"the store could not be read ({type(exc).__name__})") from exc
        ds = pydicom.dcmread(io.BytesIO(blob))
        # Decoded once (out of process when compressed); an Enhanced MR image frame by frame.
        single = frame_count(ds) == 1
        images = [pixels(ds)] if single else frame_pixels(ds)
        for index in range(len(images)):
            out.instances.append(instance)
            out.datasets.append(ds)
            out.frames.append(index)
            out.images.append(images)
            out.advice.append(None if single else frame_values(ds, index, _FRAME_ADVICE))
    return out


def _score_batch(run: ScoringRun, instances: list[Instance]) -> list[_Scored]:
    """Compute (no writes to the database): masks go to the store under this run's keys.

    The network sees at most :data:`CLAIM_BATCH` slices at a time, so a claim of one long
    Enhanced MR instance does not hold every frame's masks at full size at once."""
    from ml.pipeline import get_pipeline

    try:
        pipeline = get_pipeline(model_weights_local(run.model_version))
    except Exception as exc:
        raise NotTheSlices(f"the model could not be loaded ({type(exc).__name__})") from exc
    slices = _decode(instances)
    scored: list[_Scored] = []
    pngs: list[tuple[str, bytes]] = []
    for start in range(0, len(slices.images), CLAIM_BATCH):
        chunk = slice(start, start + CLAIM_BATCH)
        # Float32 for this batch only: a long Enhanced MR instance is not all made so at once.
        images = [
            frames[index]
            for frames, index in zip(slices.images[chunk], slices.frames[chunk], strict=True)
        ]
        result = pipeline.score_datasets(
            slices.datasets[chunk], images=images, frames=slices.frames[chunk]
        )
        heads = _head_masks(images)
        for index, (instance, frame, advice) in enumerate(
            zip(slices.instances[chunk], slices.frames[chunk], slices.advice[chunk], strict=True)
        ):
            header = _advice_header(instance, advice)
            scored.append(
                _score_slice(run, instance, frame + 1, header, result, index, heads[index], pngs)
            )
    # Durable before any row refers to them, with one sync for the batch (not one per mask).
    if pngs:
        try:
            store_put_many(pngs)
        except Exception as exc:
            raise NotTheSlices(f"the masks could not be stored ({type(exc).__name__})") from exc
    return scored


def _score_slice(
    run: ScoringRun,
    instance: Instance,
    frame: int,
    header: AdviceHeader,
    result: Any,
    index: int,
    head: np.ndarray,
    pngs: list[tuple[str, bytes]],
) -> _Scored:
    """The findings, index and reason of slice ``index`` of ``result`` (frame ``frame``,
    1-based, of ``instance``); its masks' PNGs are appended to ``pngs``."""
    head_area = max(int(head.sum()), 1)
    pixel_mm2 = None
    if instance.pixel_spacing_row_mm and instance.pixel_spacing_col_mm:
        pixel_mm2 = instance.pixel_spacing_row_mm * instance.pixel_spacing_col_mm
    findings, masks = [], []
    for k, artifact in enumerate(result.classes):
        mask = result.masks[index, k]
        area = int(np.count_nonzero(mask))
        if area == 0:
            continue
        # The box from the rows and columns that hold any pixel (np.nonzero lists them all).
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        key = mask_key(
            site_id=run.site_id,
            run_id=str(run.pk),
            sop_uid=instance.sop_uid,
            artifact=artifact,
            frame=frame if instance.frame_count > 1 else None,
        )
        pngs.append((key, mask_png(mask)))
        masks.append(mask)
        findings.append(
            Finding(
                run=run,
                instance=instance,
                frame=frame,
                site_id=run.site_id,
                artifact_type=artifact,
                mask_key=key,
                area_px=area,
                area_mm2=area * pixel_mm2 if pixel_mm2 else None,
                area_fraction=area / mask.size,
                head_fraction=int(np.count_nonzero(mask & head)) / head_area,
                bbox=[int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1],
                confidence=float(result.presence[index, k]),
                advice=advise(artifact, header).text(),
            )
        )
    suitability = slice_suitability(model_suitability=float(result.suitability[index]), masks=masks)
    reason = slice_reason(
        suitability=suitability,
        findings=[FindingShare(f.artifact_type, f.head_fraction, f.confidence) for f in findings],
        phase_encode=instance.phase_encode_direction,
    )
    packed = [np.packbits(m > 0, axis=1) for m in masks]
    return _Scored(instance, frame, suitability, reason, findings, packed)


class _Failure(NamedTuple):
    text: str
    final: bool
    """The slice is refused by what it is (:class:`ml.pipeline.InputRefused`): quarantined at
    once, not tried again."""


def _failure(exc: BaseException) -> _Failure:
    from ml.pipeline import InputRefused

    return _Failure(_failure_text(exc), isinstance(exc, InputRefused))


def _failure_text(exc: BaseException) -> str:
    from ml.pipeline import ScoringError

    # Our own ScoringError messages say what is wrong with the slice; other messages may quote
    # file contents, so only their class is kept.
    first_line = (str(exc).splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {first_line}" if isinstance(exc, ScoringError) else ""
    text = text or type(exc).__name__
    return text[:300]


def _compute(
    run: ScoringRun, instances: list[Instance]
) -> tuple[list[_Scored], dict[uuid.UUID, _Failure]]:
    """Score ``instances``; when the batch fails, each slice alone, so only the bad ones fail."""
    try:
        return _score_batch(run, instances), {}
    except (NotTheSlices, DatabaseError):
        raise  # not the slices' fault: nobody is charged (series_score)
    except Exception as exc:
        if len(instances) == 1:
            logger.warning("scoring instance %s failed: %s", instances[0].pk, type(exc).__name__)
            return [], {instances[0].pk: _failure(exc)}
    scored: list[_Scored] = []
    failed: dict[uuid.UUID, _Failure] = {}
    for instance in instances:
        more, bad = _compute(run, [instance])
        scored += more
        failed.update(bad)
    return scored, failed


def _max_attempts() -> int:
    return int(settings.ARTISCAN_SCORING_MAX_ATTEMPTS)


def _batch(instances: list[Instance]) -> list[Instance]:
    """The first instances of ``instances`` holding up to :data:`CLAIM_BATCH` slices (frames),
    at least one."""
    picked: list[Instance] = []
    slices = 0
    for instance in instances:
        if picked and slices + max(1, instance.frame_count) > CLAIM_BATCH:
            break
        picked.append(instance)
        slices += max(1, instance.frame_count)
    return picked


def _claim(
    series_id: uuid.UUID | str, model_version: ModelVersion, claimant: str, skip: set[uuid.UUID]
) -> _Claim | None:
    now = timezone.now()
    with transaction.atomic():
        series = Series.objects.select_for_update().filter(pk=series_id).first()
        if series is None:
            return None
        run, _ = ScoringRun.objects.get_or_create(
            series=series,
            model_version=model_version,
            defaults={"site_id": series.site_id, "status": RunStatus.RUNNING},
        )
        todo = list(
            series.instances.exclude(scores__run=run)
            .exclude(pk__in=skip)
            .order_by("instance_number", "sop_uid")
        )
        attempts = {
            a.instance_id: a
            for a in SliceAttempt.objects.select_for_update().filter(
                model_version=model_version, instance__in=todo
            )
        }
        fresh: list[Instance] = []
        suspects: list[tuple[int, int, Instance]] = []
        quarantined: list[Instance] = []
        for order, instance in enumerate(todo):
            attempt = attempts.get(instance.pk)
            if attempt is None or attempt.attempts == 0:
                fresh.append(instance)
                continue
            if attempt.quarantined:
                continue
            if (
                attempt.claimed_until
                and attempt.claimed_until > now
                and (attempt.claimed_by != claimant)
            ):
                continue  # another worker is on it
            if attempt.attempts >= _max_attempts():
                attempt.quarantined = True
                attempt.claimed_until = None
                attempt.error = (
                    attempt.error
                    or f"the scoring died {attempt.attempts} times on this slice (worker lost)"
                )
                attempt.save(update_fields=["quarantined", "claimed_until", "error", "updated_at"])
                logger.error("slice %s quarantined: %s", instance.pk, attempt.error)
                quarantined.append(instance)
                continue
            suspects.append((attempt.attempts, order, instance))
        # Fresh instances go in a batch of up to CLAIM_BATCH slices (an Enhanced MR instance
        # is as many as its frames, and always goes whole); a suspect alone, so a crash is
        # pinned on one instance.
        picked = _batch(fresh) if fresh else [min(suspects)[2]] if suspects else []
        # A claim lasts ARTISCAN_SCORING_CLAIM_S per network batch of slices it holds: a long
        # Enhanced MR instance (always claimed whole) takes proportionally longer.
        batches = -(-sum(max(1, i.frame_count) for i in picked) // CLAIM_BATCH) or 1
        until = now + timedelta(seconds=int(settings.ARTISCAN_SCORING_CLAIM_S) * batches)
        for instance in picked:
            attempt = attempts.get(instance.pk) or SliceAttempt(
                instance=instance, model_version=model_version, site_id=series.site_id
            )
            attempt.attempts += 1
            attempt.claimed_by = claimant[:64]
            attempt.claimed_until = until
            attempt.save()
        if picked:
            if run.started_at is None:
                run.started_at = now
            run.status = RunStatus.RUNNING
            run.save(update_fields=["status", "started_at"])
            if _shows(run, series):  # a comparison run leaves the series' state alone
                Series.objects.filter(pk=series.pk).update(status=SeriesStatus.SCORING)
        if quarantined:
            _series_summary(run, series)
            _publish(run, series, [])
            run_seg_schedule(run=run)  # the series may have been waiting for these alone
    return _Claim(run, picked, quarantined)


def _write(
    run: ScoringRun, scored: list[_Scored], failed: dict[uuid.UUID, _Failure]
) -> list[_Scored]:
    with transaction.atomic():
        series = Series.objects.select_for_update().get(pk=run.series_id)
        # Whether this run's version is still the deployed one, as of now: a rollback that
        # committed while the batch was computed must not have the series re-pointed to it.
        run.model_version.refresh_from_db(fields=["is_deployed"])
        ids = list({s.instance.pk for s in scored})
        done = set(
            InstanceScore.objects.filter(run=run, instance_id__in=ids).values_list(
                "instance_id", "frame"
            )
        )
        # Someone else wrote them (an instance's frames are written together, or not at all).
        fresh = [s for s in scored if (s.instance.pk, s.frame) not in done]
        roi = series_roi(series=series)
        rows = []
        for item in fresh:
            roi_value, roi_reason = _roi_slice(item, roi)
            rows.append(
                InstanceScore(
                    run=run,
                    instance=item.instance,
                    frame=item.frame,
                    suitability=item.suitability,
                    nondiagnostic=item.suitability < NONDIAGNOSTIC_BELOW,
                    reason=item.reason,
                    roi_suitability=roi_value,
                    roi_reason=roi_reason,
                )
            )
        InstanceScore.objects.bulk_create(rows)
        Finding.objects.bulk_create([f for item in fresh for f in item.findings])
        SliceAttempt.objects.filter(model_version=run.model_version, instance_id__in=ids).update(
            claimed_until=None, error=""
        )
        for instance_id, failure in failed.items():
            attempt = SliceAttempt.objects.select_for_update().get(
                model_version=run.model_version, instance_id=instance_id
            )
            attempt.claimed_until = None
            attempt.error = failure.text
            attempt.quarantined = failure.final or attempt.attempts >= _max_attempts()
            attempt.save(update_fields=["claimed_until", "error", "quarantined", "updated_at"])
            if attempt.quarantined:
                logger.error("slice %s quarantined: %s", instance_id, failure.text)
        _series_summary(run, series)
        _publish(run, series, fresh)
        quarantined_now = bool(failed) and any(
            SliceAttempt.objects.filter(
                model_version=run.model_version, instance_id__in=list(failed), quarantined=True
            ).values_list("pk", flat=True)[:1]
        )
        if fresh or quarantined_now:
            # Only a write that scored something, or that gave up on a slice (its SEG was
            # waiting for it), asks for the SEG: the tasks that find their slices already
            # scored by an earlier one (a burst of requests) ask for nothing.
            run_seg_schedule(run=run)
    return fresh


def series_score(
    *,
    series_id: uuid.UUID | str,
    model_version: ModelVersion | None = None,
    claimant: str | None = None,
) -> ScoringRun | None:
    """Score the instances of ``series_id`` that ``model_version`` (default: the deployed one)
    has not scored yet, batch by batch (module docstring). ``claimant`` names the caller's claims
    (the Celery task id: a redelivered task takes its own claims back at once).

    Raises :class:`SlicesPending` after writing everything else when some slices failed and
    have attempts left; quarantined slices do not raise.
    """
    model_version = model_version or model_version_deployed()
    claimant = claimant or f"direct-{uuid.uuid4()}"
    run: ScoringRun | None = None
    failed_now: set[uuid.UUID] = set()
    pending = False
    while True:
        claim = _claim(series_id, model_version, claimant, failed_now)
        if claim is None:
            return run
        run = claim.run
        if not claim.instances:
            break
        try:
            scored, failed = _compute(run, claim.instances)
        except (NotTheSlices, DatabaseError) as exc:
            _release(model_version, claim.instances)
            logger.warning("scoring series %s paused, no slice charged: %s", series_id, exc)
            if isinstance(exc, NotTheSlices) and isinstance(exc.__cause__, Exception):
                # The cause itself, so the task retries what is transient (the store full,
                # a connection refused) with its backoff.
                raise exc.__cause__ from None
            raise
        _write(run, scored, failed)
        failed_now |= set(failed)
        pending = pending or any(
            not a.quarantined
            for a in SliceAttempt.objects.filter(
                model_version=model_version, instance_id__in=list(failed)
            )
        )
    if pending:
        raise SlicesPending(f"slices of series {series_id} failed and will be tried again")
    return run


def _release(model_version: ModelVersion, instances: list[Instance]) -> None:
    """Give back the claims of a batch that failed for a reason outside its slices, and the
    attempt each claim counted."""
    with transaction.atomic():
        SliceAttempt.objects.filter(
            model_version=model_version,
            instance__in=instances,
            attempts__gt=0,
            quarantined=False,
        ).update(attempts=F("attempts") - 1, claimed_until=None)


def series_unscored_count(*, series_id: uuid.UUID | str, run: ScoringRun) -> int:
    """Slices still to come for ``run``: a quarantined one never comes (the SEG of the rest is
    built without it)."""
    quarantined = SliceAttempt.objects.filter(
        model_version_id=run.model_version_id, quarantined=True
    ).values("instance_id")
    return (
        Instance.objects.filter(series_id=series_id)
        .exclude(scores__run=run)
        .exclude(pk__in=quarantined)
        .count()
    )


SEG_DELAY_S = 1.5
"""Seconds a run's scoring must stay quiet before its DICOM SEG is (re)built. The SEG reads
every slice of the series back from the store: built after each write, as slices trickle in,
it cost more than the scoring itself and kept the worker from the next slice. The events never
promised it; viewers find it in the study a moment after the last verdict. Kept under the 2 s
of quiet the test suite waits for before it flushes the database (``tests/conftest.py``), so a
pending SEG request is seen there as activity, not left to run into the flush."""


def run_seg_schedule(*, run: ScoringRun) -> None:
    """Ask the ``cpu`` queue for the SEG of ``run`` in :data:`SEG_DELAY_S`, once its series has
    nothing waiting. Tagged with the number of slices scored now: a later write asks again with
    its own number and the earlier request does nothing (see :func:`run_seg_refresh`)."""
    from backend.scoring.tasks import run_seg_task

    if series_unscored_count(series_id=run.series_id, run=run):
        return
    run_id, scored = str(run.pk), run.instance_scores.count()
    transaction.on_commit(
        lambda: run_seg_task.apply_async((run_id, scored), countdown=SEG_DELAY_S, queue="cpu")
    )


def run_seg_refresh(*, run_id: uuid.UUID | str, scored: int) -> list[Instance] | None:
    """Build and store the SEG of run ``run_id`` if it still has exactly ``scored`` slices
    scored and none waiting (else a later request covers it); idempotent (``seg_store``)."""
    run = ScoringRun.objects.select_related("series", "model_version").filter(pk=run_id).first()
    if run is None or run.instance_scores.count() != scored:
        return None
    if series_unscored_count(series_id=run.series_id, run=run):
        return None
    # Imported here: highdicom and pydicom's SR dictionaries are ~25 MB of every web process's
    # memory (MISSION: ≤ 300 MB), and only the gpu workers build SEG objects.
    from backend.scoring.seg import seg_store

    return seg_store(run)


def scoring_attempt_budget(*, series_id: uuid.UUID | str) -> int:
    """How many deliveries a scoring task of this series may take: every delivery that dies
    counts an attempt on at least one slice, and each slice has ``MAX_ATTEMPTS``; one more to
    quarantine the last."""
    unscored = Instance.objects.filter(series_id=series_id).count()
    return _max_attempts() * max(1, unscored) + 1


def _shows(run: ScoringRun, series: Series) -> bool:
    """Whether the series shows ``run``: the deployed version's run is the one it shows;
    another version's (a comparison, ``rescore --model``) is readable with ``?model=`` but
    changes neither the series' result nor its state."""
    return run.model_version.is_deployed or series.current_run_id in (None, run.pk)


def _series_summary(run: ScoringRun, series: Series) -> None:
    scores = list(run.instance_scores.select_related("instance"))
    quarantined = SliceAttempt.objects.filter(
        model_version=run.model_version, instance__series=series, quarantined=True
    ).count()
    run.suitability = series_suitability([s.suitability for s in scores])
    run.nondiagnostic = None if run.suitability is None else run.suitability < NONDIAGNOSTIC_BELOW
    run.reason = series_reason(
        [(_label(s), s.suitability, s.reason) for s in scores], quarantined=quarantined
    )
    run.roi_suitability, run.roi_reason = _roi_series(scores)
    run.status = RunStatus.DONE if scores else RunStatus.FAILED
    run.finished_at = timezone.now()
    run.save(
        update_fields=[
            "suitability",
            "nondiagnostic",
            "reason",
            "roi_suitability",
            "roi_reason",
            "status",
            "finished_at",
        ]
    )
    if _shows(run, series):
        Series.objects.filter(pk=series.pk).update(
            suitability=run.suitability,
            current_run=run,
            status=SeriesStatus.SCORED if scores else SeriesStatus.FAILED,
        )
        # An instance's index: its worst frame's (a classic instance has one).
        worst: dict[uuid.UUID, InstanceScore] = {}
        for score in scores:
            if (
                score.instance_id not in worst
                or score.suitability < worst[score.instance_id].suitability
            ):
                worst[score.instance_id] = score
        changed = []
        for score in worst.values():
            if score.instance.suitability != score.suitability:
                score.instance.suitability = score.suitability
                changed.append(score.instance)
        Instance.objects.bulk_update(changed, ["suitability"])
    else:
        # Not the run the series shows. If its claim set the series to "scoring" and the run it
        # does show is finished (a rollback re-pointed it meanwhile), that run's state is the
        # series'; one still running (the deployed version mid-series) keeps "scoring".
        shown = (
            ScoringRun.objects.filter(pk=series.current_run_id)
            .values_list("status", flat=True)
            .first()
            if series.current_run_id is not None
            else None
        )
        if shown in (RunStatus.DONE, RunStatus.FAILED):
            Series.objects.filter(pk=series.pk, status=SeriesStatus.SCORING).update(
                status=SeriesStatus.SCORED if shown == RunStatus.DONE else SeriesStatus.FAILED
            )


def _index(value: float | None) -> int | None:
    return None if value is None else round(value * 100)


def _label(score: InstanceScore) -> str:
    return slice_label(score.instance.instance_number, score.frame, score.instance.frame_count)


def _publish(run: ScoringRun, series: Series, scored: list[_Scored]) -> None:
    site_id, series_id = series.site_id, str(series.pk)
    scores = {
        (s.instance_id, s.frame): s
        for s in InstanceScore.objects.filter(run=run, instance__in=[i.instance for i in scored])
    }
    events = [
        {
            "series_id": series_id,
            "instance_id": str(item.instance.pk),
            "sop_uid": item.instance.sop_uid,
            "instance_number": item.instance.instance_number,
            "frame": item.frame,
            "frame_count": item.instance.frame_count,
            "model": str(run.model_version),
            "suitability_index": round(item.suitability * 100),
            "roi_suitability_index": _index(
                scores[key].roi_suitability
                if (key := (item.instance.pk, item.frame)) in scores
                else None
            ),
            "reason": item.reason,
            "findings": [
                {
                    "type": f.artifact_type,
                    "head_fraction": round(f.head_fraction, 3),
                    "advice": f.advice,
                }
                for f in item.findings
            ],
        }
        for item in scored
    ]
    summary = {
        "series_id": series_id,
        "run_id": str(run.pk),
        "model": str(run.model_version),
        "suitability_index": _index(run.suitability),
        "roi_suitability_index": _index(run.roi_suitability),
        "reason": run.reason,
    }

    batch = [("instance.scored", data) for data in events] + [("series.scored", summary)]

    def send() -> None:
        events_publish(site_id=site_id, events=batch)

    transaction.on_commit(send)


# --- region of interest -------------------------------------------------------------------


def _region(roi: SeriesRegionOfInterest, instance: Instance) -> np.ndarray:
    return polygon_raster(roi.polygon, instance.rows, instance.columns)


def _roi_index(
    *,
    model_suitability: float,
    findings: Sequence[tuple[str, float, np.ndarray]],
    region: np.ndarray,
    phase_encode: str,
) -> tuple[float, str]:
    """The slice's index and reason inside ``region``; ``findings``: (type, confidence, mask)."""
    value = slice_suitability(
        model_suitability=model_suitability, masks=[m for _, _, m in findings], region=region
    )
    area = max(int(region.sum()), 1)
    shares = [
        FindingShare(t, int(((m > 0) & region).sum()) / area, confidence)
        for t, confidence, m in findings
    ]
    reason = slice_reason(
        suitability=value, findings=shares, phase_encode=phase_encode, area="region of interest"
    )
    return value, reason[:300]


def _roi_slice(item: _Scored, roi: SeriesRegionOfInterest | None) -> tuple[float | None, str]:
    if roi is None or not roi.covers(item.instance.instance_number, item.frame):
        return None, ""
    return _roi_index(
        # The stored slice index is slice_suitability(s, masks) over the whole image: s itself.
        model_suitability=item.suitability,
        findings=[
            (f.artifact_type, f.confidence, _unpack(m, item.instance.columns))
            for f, m in zip(item.findings, item.masks, strict=True)
        ],
        region=_region(roi, item.instance),
        phase_encode=item.instance.phase_encode_direction,
    )


def _roi_series(scores: Iterable[InstanceScore]) -> tuple[float | None, str]:
    inside = [s for s in scores if s.roi_suitability is not None]
    if not inside:
        return None, ""
    value = series_suitability([s.roi_suitability for s in inside if s.roi_suitability is not None])
    reason = series_reason([(_label(s), s.roi_suitability or 0.0, s.roi_reason) for s in inside])
    return value, "Region of interest: " + reason[:280]


def _roi_apply(series: Series, roi: SeriesRegionOfInterest | None) -> None:
    """Recompute the ROI index of every run of ``series`` (cleared without a region)."""
    for run in ScoringRun.objects.filter(series=series).select_related("model_version"):
        findings: dict[tuple[uuid.UUID, int], list[Finding]] = {}
        for finding in run.findings.all():
            findings.setdefault((finding.instance_id, finding.frame), []).append(finding)
        scores = list(run.instance_scores.select_related("instance"))
        for score in scores:
            if roi is None or not roi.covers(score.instance.instance_number, score.frame):
                score.roi_suitability, score.roi_reason = None, ""
            else:
                own = [
                    (f.artifact_type, f.confidence, mask_get(f.mask_key))
                    for f in findings.get((score.instance_id, score.frame), [])
                    if f.mask_key
                ]
                score.roi_suitability, score.roi_reason = _roi_index(
                    model_suitability=score.suitability,
                    findings=own,
                    region=_region(roi, score.instance),
                    phase_encode=score.instance.phase_encode_direction,
                )
        InstanceScore.objects.bulk_update(scores, ["roi_suitability", "roi_reason"])
        run.roi_suitability, run.roi_reason = _roi_series(scores)
        run.save(update_fields=["roi_suitability", "roi_reason"])


def _roi_validate(
    series: Series,
    polygon: Sequence[Sequence[float]],
    first_instance: int | None,
    last_instance: int | None,
    frame: int | None = None,
) -> list[list[float]]:
    points = [[float(p[0]), float(p[1])] for p in polygon]
    if len(points) < 3:
        raise RoiError("a region needs at least 3 points")
    if not all(np.isfinite(v) for p in points for v in p):
        raise RoiError("the region's coordinates must be finite numbers")
    if first_instance is not None and last_instance is not None and first_instance > last_instance:
        raise RoiError("first_instance is after last_instance")
    instances = series.instances.all()
    if first_instance is not None:
        instances = instances.filter(instance_number__gte=first_instance)
    if last_instance is not None:
        instances = instances.filter(instance_number__lte=last_instance)
    if frame is not None:
        if frame < 1:
            raise RoiError("frame numbers start at 1")
        instances = instances.filter(frame_count__gte=frame)
    sizes = list(instances.values_list("rows", "columns").distinct())
    if not sizes:
        raise RoiError(
            "no slice of the series lies in the instance range"
            + (f" with a frame {frame}" if frame is not None else "")
        )
    rows, columns = min(r for r, _ in sizes), min(c for _, c in sizes)
    # Pixel (r, c) is centred on (c, r): the image spans -0.5 .. size - 0.5 on each axis.
    for col, row in points:
        if not (-0.5 <= col <= columns - 0.5 and -0.5 <= row <= rows - 0.5):
            raise RoiError(
                f"point ({col:g}, {row:g}) lies outside the {columns}x{rows} image "
                "([col, row] in pixels)"
            )
    if polygon_area(points) < 1.0:
        raise RoiError("the region has no area")
    return points


def series_roi_set(
    *,
    series: Series,
    user: User,
    polygon: Sequence[Sequence[float]],
    first_instance: int | None = None,
    last_instance: int | None = None,
    frame: int | None = None,
) -> SeriesRegionOfInterest:
    """Mark the region of diagnostic interest of ``series`` (replacing the current one) and
    recompute the ROI index of its runs; publishes ``series.roi``. ``frame``: only that frame
    of the instances in range (a slice of an Enhanced MR instance)."""
    points = _roi_validate(series, polygon, first_instance, last_instance, frame)
    with transaction.atomic():
        locked = Series.objects.select_for_update().get(pk=series.pk)
        now = timezone.now()
        SeriesRegionOfInterest.objects.filter(series=locked, cleared_at__isnull=True).update(
            cleared_at=now, cleared_by=user
        )
        roi = SeriesRegionOfInterest.objects.create(
            series=locked,
            site_id=locked.site_id,
            polygon=points,
            first_instance=first_instance,
            last_instance=last_instance,
            frame=frame,
            set_by=user,
            set_at=now,
        )
        _roi_apply(locked, roi)
        _roi_publish(locked, roi)
    return roi


def series_roi_clear(*, series: Series, user: User) -> bool:
    """Clear the region of interest of ``series``: False when it had none."""
    with transaction.atomic():
        locked = Series.objects.select_for_update().get(pk=series.pk)
        cleared = SeriesRegionOfInterest.objects.filter(
            series=locked, cleared_at__isnull=True
        ).update(cleared_at=timezone.now(), cleared_by=user)
        if cleared:
            _roi_apply(locked, None)
            _roi_publish(locked, None)
    return bool(cleared)


def roi_payload(roi: SeriesRegionOfInterest | None) -> dict[str, Any] | None:
    if roi is None:
        return None
    return {
        "polygon": roi.polygon,
        "first_instance": roi.first_instance,
        "last_instance": roi.last_instance,
        "frame": roi.frame,
        "set_by": roi.set_by.get_username() if roi.set_by else None,
        "set_at": roi.set_at.isoformat(),
    }


def _roi_publish(series: Series, roi: SeriesRegionOfInterest | None) -> None:
    run = ScoringRun.objects.filter(series=series, pk=series.current_run_id or uuid.uuid4()).first()
    data = {
        "series_id": str(series.pk),
        "roi": roi_payload(roi),
        "suitability_index": _index(run.suitability) if run else None,
        "roi_suitability_index": _index(run.roi_suitability) if run else None,
    }
    site_id = series.site_id
    transaction.on_commit(lambda: event_publish(site_id=site_id, kind="series.roi", data=data))
