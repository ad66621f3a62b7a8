"""Scoring series with the artifact model: the one place the Django side calls ``ml``.

Instances are scored incrementally: a task takes the series' instances that have no score for the
deployed model yet, scores them in one batch, writes their results and refreshes the series
summary. Late slices simply get scored by a later task; a redelivered task finds nothing left to
do. Exactly once per instance and model version is the unique key on ``InstanceScore``; the
series row lock keeps two workers from scoring the same slices at the same time.
"""

from __future__ import annotations

import hashlib
import io
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.realtime.services import event_publish
from backend.scoring.advice import AdviceHeader, advise
from backend.scoring.masks import mask_key, mask_put
from backend.scoring.models import Finding, InstanceScore, ModelVersion, RunStatus, ScoringRun
from backend.storage.store import store_get
from backend.studies.models import Instance, Series, SeriesStatus

logger = logging.getLogger(__name__)

NONDIAGNOSTIC_BELOW = 0.5


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_weights_path() -> Path:
    from ml.pipeline import resolve_weights

    return resolve_weights(settings.ARTISCAN_MODEL_WEIGHTS or None)


def model_version_deployed() -> ModelVersion:
    """The deployed model version: the configured weight file, registered on first use."""
    deployed = ModelVersion.objects.filter(is_deployed=True).first()
    path = model_weights_path()
    digest = _sha256(path)
    if deployed is not None and deployed.sha256 == digest:
        return deployed
    from ml import ARTIFACT_TYPES

    with transaction.atomic():
        ModelVersion.objects.filter(is_deployed=True).update(is_deployed=False)
        version, _ = ModelVersion.objects.update_or_create(
            sha256=digest,
            defaults={
                "name": path.stem,
                "version": digest[:12],
                "weights_key": str(path),
                "classes": list(ARTIFACT_TYPES),
                "is_deployed": True,
            },
        )
    return version


def series_score_enqueue(*, series_id: uuid.UUID | str) -> None:
    from backend.scoring.tasks import series_score_task

    sid = str(series_id)
    transaction.on_commit(lambda: series_score_task.delay(sid))


@dataclass(frozen=True)
class _Scored:
    instance: Instance
    suitability: float
    reason: str
    findings: list[Finding]


def _advice_header(instance: Instance) -> AdviceHeader:
    return AdviceHeader(
        field_strength_t=instance.field_strength_t,
        pixel_bandwidth_hz=instance.pixel_bandwidth_hz,
        phase_encode=instance.phase_encode_direction,
        rows=instance.rows,
        columns=instance.columns,
        spacing_row_mm=instance.pixel_spacing_row_mm,
        spacing_col_mm=instance.pixel_spacing_col_mm,
        slice_thickness_mm=instance.slice_thickness_mm,
        te_ms=instance.echo_time_ms,
        tr_ms=instance.repetition_time_ms,
        ti_ms=instance.inversion_time_ms,
    )


def _head_masks(datasets: Sequence[pydicom.Dataset]) -> list[np.ndarray]:
    from ml.simulate._common import head_and_reference

    heads = []
    for ds in datasets:
        pixels = ds.pixel_array.astype(np.float32)
        head, _ = head_and_reference(pixels[None])
        heads.append(head[0])
    return heads


def _reason(suitability: float, findings: list[Finding], instance: Instance) -> str:
    verdict = "not diagnostic" if suitability < NONDIAGNOSTIC_BELOW else "diagnostic"
    if not findings:
        return f"No artifact found: {verdict}."
    worst = max(findings, key=lambda f: (f.head_fraction, f.confidence))
    direction = {"ROW": "along the rows", "COL": "along the columns"}.get(
        instance.phase_encode_direction, ""
    )
    where = f" (phase-encode {direction})" if direction and worst.artifact_type in (
        "motion", "ghosting", "aliasing", "zipper"
    ) else ""  # fmt: skip
    name = worst.artifact_type.replace("_", " ")
    return f"{name.capitalize()} over {worst.head_fraction:.0%} of the head{where}: {verdict}."


def _score_batch(run: ScoringRun, instances: list[Instance]) -> list[_Scored]:
    """Compute (no writes to the database): masks go to the store under this run's keys."""
    from ml.pipeline import get_pipeline

    datasets = [pydicom.dcmread(io.BytesIO(store_get(i.storage_key))) for i in instances]
    result = get_pipeline(model_weights_path()).score_datasets(datasets)
    heads = _head_masks(datasets)
    scored = []
    for index, instance in enumerate(instances):
        head_area = max(int(heads[index].sum()), 1)
        pixel_mm2 = None
        if instance.pixel_spacing_row_mm and instance.pixel_spacing_col_mm:
            pixel_mm2 = instance.pixel_spacing_row_mm * instance.pixel_spacing_col_mm
        findings = []
        for k, artifact in enumerate(result.classes):
            mask = result.masks[index, k]
            area = int(mask.sum())
            if area == 0:
                continue
            rows, cols = np.nonzero(mask)
            key = mask_key(
                site_id=run.site_id, run_id=str(run.pk), sop_uid=instance.sop_uid, artifact=artifact
            )
            mask_put(key, mask)
            findings.append(
                Finding(
                    run=run,
                    instance=instance,
                    site_id=run.site_id,
                    artifact_type=artifact,
                    mask_key=key,
                    area_px=area,
                    area_mm2=area * pixel_mm2 if pixel_mm2 else None,
                    area_fraction=area / mask.size,
                    head_fraction=int((mask.astype(bool) & heads[index]).sum()) / head_area,
                    bbox=[
                        int(rows.min()),
                        int(cols.min()),
                        int(rows.max()) + 1,
                        int(cols.max()) + 1,
                    ],
                    confidence=float(result.presence[index, k]),
                    advice=advise(artifact, _advice_header(instance)).text(),
                )
            )
        suitability = float(result.suitability[index])
        scored.append(
            _Scored(instance, suitability, _reason(suitability, findings, instance), findings)
        )
    return scored


def series_score(*, series_id: uuid.UUID | str) -> ScoringRun | None:
    """Score the instances of ``series_id`` that the deployed model has not scored yet."""
    model_version = model_version_deployed()
    with transaction.atomic():
        series = Series.objects.select_for_update().get(pk=series_id)
        run, _ = ScoringRun.objects.get_or_create(
            series=series,
            model_version=model_version,
            defaults={"site_id": series.site_id, "status": RunStatus.RUNNING},
        )
        todo = list(
            series.instances.exclude(scores__run=run).order_by("instance_number", "sop_uid")
        )
        if not todo:
            return run
        if run.started_at is None:
            run.started_at = timezone.now()
        run.status = RunStatus.RUNNING
        run.save(update_fields=["status", "started_at"])
        Series.objects.filter(pk=series.pk).update(status=SeriesStatus.SCORING)
        scored = _score_batch(run, todo)
        for item in scored:
            InstanceScore.objects.create(
                run=run,
                instance=item.instance,
                suitability=item.suitability,
                nondiagnostic=item.suitability < NONDIAGNOSTIC_BELOW,
                reason=item.reason,
            )
            Finding.objects.bulk_create(item.findings)
            Instance.objects.filter(pk=item.instance.pk).update(suitability=item.suitability)
        _series_summary(run, series)
    _publish(run, series, scored)
    return run


def series_unscored_count(*, series_id: uuid.UUID | str, run: ScoringRun) -> int:
    return Instance.objects.filter(series_id=series_id).exclude(scores__run=run).count()


def _series_summary(run: ScoringRun, series: Series) -> None:
    scores = list(run.instance_scores.select_related("instance"))
    values = np.array([s.suitability for s in scores], dtype=np.float32)
    # The series is as usable as its usable slices: the share of diagnostic slices, tempered by
    # how bad the worst ones are.
    series_suitability = float(
        np.clip(0.5 * (values >= NONDIAGNOSTIC_BELOW).mean() + 0.5 * values.mean(), 0, 1)
    )
    worst = min(scores, key=lambda s: s.suitability)
    bad = int((values < NONDIAGNOSTIC_BELOW).sum())
    run.suitability = series_suitability
    run.nondiagnostic = series_suitability < NONDIAGNOSTIC_BELOW
    run.reason = (
        f"{bad} of {len(scores)} slices not diagnostic; worst slice "
        f"{worst.instance.instance_number}: {worst.reason}"
        if bad
        else f"All {len(scores)} slices diagnostic."
    )[:300]
    run.status = RunStatus.DONE
    run.finished_at = timezone.now()
    run.save(update_fields=["suitability", "nondiagnostic", "reason", "status", "finished_at"])
    Series.objects.filter(pk=series.pk).update(
        suitability=series_suitability, current_run=run, status=SeriesStatus.SCORED
    )


def _publish(run: ScoringRun, series: Series, scored: list[_Scored]) -> None:
    def send() -> None:
        for item in scored:
            event_publish(
                site_id=series.site_id,
                kind="instance.scored",
                data={
                    "series_id": str(series.pk),
                    "instance_id": str(item.instance.pk),
                    "sop_uid": item.instance.sop_uid,
                    "instance_number": item.instance.instance_number,
                    "suitability_index": round(item.suitability * 100),
                    "reason": item.reason,
                    "findings": [
                        {
                            "type": f.artifact_type,
                            "head_fraction": round(f.head_fraction, 3),
                            "advice": f.advice,
                        }
                        for f in item.findings
                    ],
                },
            )
        event_publish(
            site_id=series.site_id,
            kind="series.scored",
            data={
                "series_id": str(series.pk),
                "run_id": str(run.pk),
                "suitability_index": round((run.suitability or 0) * 100),
                "reason": run.reason,
            },
        )

    transaction.on_commit(send)
