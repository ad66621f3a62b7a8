"""Training sets from campaigns, fine-tuning the deployed model on them, and promotion.

A training set is a directory in the layout ``python -m ml dataset`` writes and ``python -m ml
train`` reads (``ml/data/dataset.py``)::

    manifest.json              every shard (annotated/… and simulated/…), the recipe
    annotated/manifest.json    the campaign's slices alone (for evaluating on them)
    annotated/{train,val,test}/RxC-NNNN.npz
    simulated/manifest.json    simulated slices mixed in (``python -m ml dataset``), if any
    SHA256SUMS                 sha256 of every file; the set's checksum is that of this file

Nothing in it identifies a patient or even a study: shards hold pixels, masks, labels and the
acquisition values the model reads. Each series goes to a fixed split by a hash of its
pseudonymous UID (70 % train, 10 % val, 20 % test), so a series' held-out slices stay held
out in every later version of the set. Files are made read-only once written.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from annotation.models import Campaign, CampaignSeries, FineTune, JobStatus, TrainingSet
from annotation.selectors import is_lead
from annotation.services import ARTIFACT_TYPES, consensus
from backend.accounts.models import User
from backend.audit.exceptions import Refused
from backend.audit.services import AuditTarget
from backend.jobs.services import JobBusy, job_lock, job_lock_key
from backend.scoring.services import _sha256
from backend.storage.store import store_get
from backend.studies.models import Instance

SHARD_SLICES = 32
FORMAT = "artiscan-training-set/1"
SPLIT_RULE = "per series: sha256(series UID pseudonym)[:8] mod 10: <7 train, 7 val, else test"


def series_split(series_uid: str) -> str:
    """The fixed split of a series: by the first 8 hex digits of sha256(UID) mod 10."""
    bucket = int(hashlib.sha256(series_uid.encode()).hexdigest()[:8], 16) % 10
    return "train" if bucket < 7 else "val" if bucket < 8 else "test"


def training_sets_root() -> Path:
    return Path(settings.VAR_DIR) / "training_sets"


def _f32(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _slice_arrays(
    instance: Instance, masks: dict[str, np.ndarray], diagnostic: bool | None, sequence: str
) -> dict[str, Any]:
    from ml.pipeline import frame_pixels

    ds = pydicom.dcmread(io.BytesIO(store_get(instance.storage_key)))
    # The frame the annotation page shows and the reader drew on: the first (a multi-frame
    # instance's others are not annotated).
    image = frame_pixels(ds)[0]
    positive = image[image > 0]
    scale = float(np.percentile(positive, 99)) if positive.size else 1.0
    stack = np.zeros((len(ARTIFACT_TYPES), instance.rows, instance.columns), np.uint8)
    for name, mask in masks.items():
        stack[ARTIFACT_TYPES.index(name)] = mask
    nondiagnostic = diagnostic is False
    return {
        "images": (image / max(scale, 1e-6)).astype(np.float32),
        "masks": stack,
        "nondiagnostic_types": stack.reshape(len(ARTIFACT_TYPES), -1).any(axis=1) & nondiagnostic,
        "nondiagnostic": nondiagnostic,
        "severity": np.zeros(len(ARTIFACT_TYPES), np.float32),
        "field_strength_t": _f32(instance.field_strength_t),
        "pixel_bandwidth_hz": _f32(instance.pixel_bandwidth_hz),
        "te_ms": _f32(instance.echo_time_ms),
        "tr_ms": _f32(instance.repetition_time_ms),
        "ti_ms": _f32(instance.inversion_time_ms),
        "flip_deg": _f32(instance.flip_angle_deg),
        "phase_encode": instance.phase_encode_direction or "ROW",
        "pixel_spacing_mm": [
            instance.pixel_spacing_row_mm or 1.0,
            instance.pixel_spacing_col_mm or 1.0,
        ],
        "sequence": sequence or "unknown",
        "source": "annotated",
        "orientation": "unknown",
        "slice_index": instance.instance_number or 0,
    }


def _write_shards(root: Path, examples: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    from ml.data.dataset import _save_npz

    groups: dict[tuple[str, tuple[int, int]], list[dict[str, Any]]] = defaultdict(list)
    for split, arrays in examples:
        groups[(split, arrays["images"].shape)].append(arrays)
    shards = []
    for (split, (rows, cols)), items in sorted(groups.items()):
        for number, start in enumerate(range(0, len(items), SHARD_SLICES)):
            chunk = items[start : start + SHARD_SLICES]
            rel = f"{split}/{rows}x{cols}-{number:04d}.npz"
            stacked = {
                key: np.stack([np.asarray(c[key]) for c in chunk])
                if key in ("images", "masks", "nondiagnostic_types", "severity", "pixel_spacing_mm")
                else np.array([c[key] for c in chunk])
                for key in chunk[0]
            }
            stacked["pixel_spacing_mm"] = stacked["pixel_spacing_mm"].astype(np.float32)
            stacked["slice_index"] = stacked["slice_index"].astype(np.int32)
            for key in (
                "field_strength_t",
                "pixel_bandwidth_hz",
                "te_ms",
                "tr_ms",
                "ti_ms",
                "flip_deg",
            ):
                stacked[key] = stacked[key].astype(np.float32)
            _save_npz(root / rel, stacked)
            shards.append(
                {"path": rel, "split": split, "shape": [rows, cols], "slices": len(chunk)}
            )
    return shards


def _checksums(root: Path) -> str:
    lines = [
        f"{_sha256(p)}  {p.relative_to(root).as_posix()}"
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "SHA256SUMS"
    ]
    return "\n".join(lines) + "\n"


def training_set_verify(*, training_set: TrainingSet) -> bool:
    """Whether the set on disk is still exactly what was exported."""
    root = Path(training_set.path)
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        return False
    text = sums.read_text()
    return (
        hashlib.sha256(text.encode()).hexdigest() == training_set.sha256
        and _checksums(root) == text
    )


def _freeze(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        path.chmod(0o444 if path.is_file() else 0o555)
    root.chmod(0o555)


@transaction.atomic
def training_set_export(
    *,
    user: User,
    campaign: Campaign,
    simulated_ratio: float = 0.0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> TrainingSet:
    """Export the campaign's adjudicated/consensus slices (plus simulated slices making up
    ``simulated_ratio`` of the whole) as a new immutable version. ``progress(done, total)`` is
    called after each annotated slice."""
    if not is_lead(user=user, site_id=campaign.site_id):
        raise Refused(
            "only the campaign's annotation leads export",
            target=AuditTarget("campaign", str(campaign.pk), campaign.site_id),
        )
    if not 0.0 <= simulated_ratio < 1.0:
        raise ValidationError("the simulated share is from 0 up to (not including) 1")
    rows = consensus(campaign=campaign)
    if not rows:
        raise ValidationError("nothing to export: no slice has an agreed or adjudicated reading")
    Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    version = (
        TrainingSet.objects.filter(campaign=campaign).aggregate(v=Max("version"))["v"] or 0
    ) + 1
    final = training_sets_root() / f"{campaign.pk}-v{version}"
    work = training_sets_root() / f".tmp-{uuid.uuid4().hex}"
    work.mkdir(parents=True, mode=0o700)
    try:
        sequences = dict(
            CampaignSeries.objects.filter(campaign=campaign).values_list(
                "series_id", "series__sequence_family"
            )
        )
        examples = []
        uids = dict(
            CampaignSeries.objects.filter(campaign=campaign).values_list(
                "series_id", "series__series_uid"
            )
        )
        for done, (instance, masks, diagnostic) in enumerate(rows, start=1):
            split = series_split(uids[instance.series_id])
            arrays = _slice_arrays(
                instance, masks, diagnostic, sequences.get(instance.series_id, "")
            )
            examples.append((split, arrays))
            if progress is not None:
                progress(done, len(rows))
        annotated_shards = _write_shards(work / "annotated", examples)
        counts = {
            s: sum(1 for split, _ in examples if split == s) for s in ("train", "val", "test")
        }
        annotated_manifest = {
            "format": FORMAT,
            "artifact_types": ARTIFACT_TYPES,
            "annotated_types": campaign.artifact_types,
            "split_rule": SPLIT_RULE,
            "splits": counts,
            "shards": annotated_shards,
        }
        (work / "annotated" / "manifest.json").write_text(
            json.dumps(annotated_manifest, indent=2) + "\n"
        )
        shards = [{**s, "path": f"annotated/{s['path']}"} for s in annotated_shards]
        simulated = 0
        if simulated_ratio > 0:
            from ml.data.dataset import build_dataset

            wanted = max(3, math.ceil(len(examples) * simulated_ratio / (1.0 - simulated_ratio)))
            sim = build_dataset(work / "simulated", slices_total=wanted, seed=seed, progress=False)
            simulated = int(sim["slices"])
            shards += [{**s, "path": f"simulated/{s['path']}"} for s in sim["shards"]]
        manifest = {
            "format": FORMAT,
            "campaign": str(campaign.pk),
            "version": version,
            "created_at": timezone.now().isoformat(),
            "artifact_types": ARTIFACT_TYPES,
            "annotated_types": campaign.artifact_types,
            "note": "types outside annotated_types were not annotated and count as absent",
            "simulated_ratio": simulated_ratio,
            "seed": seed,
            "annotated_slices": counts,
            "simulated_slices": simulated,
            "shards": shards,
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        sums = _checksums(work)
        (work / "SHA256SUMS").write_text(sums)
        os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _freeze(final)
    return TrainingSet.objects.create(
        campaign=campaign,
        site_id=campaign.site_id,
        version=version,
        path=str(final),
        sha256=hashlib.sha256(sums.encode()).hexdigest(),
        simulated_ratio=simulated_ratio,
        annotated_slices=counts,
        simulated_slices=simulated,
        created_by=user,
    )


def finetune_request(
    *,
    user: User,
    training_set: TrainingSet,
    epochs: int = 3,
    steps: int = 20,
    crop: int = 128,
    batch: int = 4,
    learning_rate: float = 2e-4,
) -> FineTune:
    """Queue fine-tuning of the deployed model on ``training_set`` (Celery, ``gpu`` queue)."""
    if not is_lead(user=user, site_id=training_set.site_id):
        raise Refused(
            "only annotation leads fine-tune",
            target=AuditTarget("training_set", str(training_set.pk), training_set.site_id),
        )
    for name, value, low, high in (
        ("epochs", epochs, 1, 200),
        ("steps", steps, 1, 10_000),
        ("crop", crop, 16, 1024),
        ("batch", batch, 1, 64),
    ):
        if not low <= value <= high:
            raise ValidationError(f"{name} must be {low} to {high}")
    job = FineTune.objects.create(
        training_set=training_set,
        site_id=training_set.site_id,
        params={
            "epochs": epochs,
            "steps": steps,
            "crop": crop,
            "batch": batch,
            "learning_rate": learning_rate,
        },
        requested_by=user,
        message="queued",
    )
    from annotation.tasks import QUEUE, finetune_task

    job_id = str(job.pk)
    # Robust: a broker that is away must not fail a request whose job is queued already; the
    # requeue sweep (``finetune_requeue_lost``) publishes it later.
    transaction.on_commit(
        lambda: finetune_task.apply_async(args=[job_id], queue=QUEUE), robust=True
    )
    return job


def finetune_requeue_lost(*, older_than_s: float | None = None) -> list[str]:
    """Hand again to a worker each fine-tuning queued more than ``older_than_s`` seconds ago
    (default ``ARTISCAN_REQUEUE_AFTER_S``) that no worker ever began: its message was lost in
    the broker (``backend.jobs.services.lost_jobs_requeue``). Returns their ids. Without this,
    such a fine-tuning stayed "queued" for good."""
    from annotation.tasks import QUEUE, finetune_task
    from backend.jobs.services import lost_jobs_requeue

    if older_than_s is None:
        older_than_s = float(settings.ARTISCAN_REQUEUE_AFTER_S)
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    queued = FineTune.objects.filter(status=JobStatus.QUEUED, created_at__lt=cutoff)
    return lost_jobs_requeue(
        task=finetune_task,
        queue=QUEUE,
        subjects=[str(pk) for pk in queued.order_by("created_at").values_list("pk", flat=True)],
    )


def _base_weights(model_version: Any) -> Path:
    """The Keras file of a model version (an ONNX export's ``.keras`` twin)."""
    from backend.scoring.services import model_weights_local

    weights = model_weights_local(model_version)
    if weights.suffix == ".onnx" and weights.with_suffix(".keras").is_file():
        return weights.with_suffix(".keras")
    return weights


def run_lock_key(finetune_id: uuid.UUID) -> int:
    """The PostgreSQL advisory lock a worker holds while it runs this fine-tuning."""
    return job_lock_key(finetune_id)


def finetune_run(*, finetune_id: uuid.UUID | str) -> FineTune:
    """Run a queued fine-tuning in a child process (``annotation.ml_runner``: train, tune the
    candidate's thresholds on the set's val split, evaluate candidate and deployed model on
    the annotated and simulated test splits), keeping ``progress`` up to date; then register
    the candidate model version."""
    job = FineTune.objects.select_related("training_set").get(pk=finetune_id)
    if job.status == JobStatus.DONE:
        return job
    with job_lock(job.pk) as ours:
        if not ours:  # another delivery of this task is running it right now
            raise JobBusy(f"fine-tuning {job.pk} is running")
        job.refresh_from_db()
        if job.status == JobStatus.DONE:
            return job
        return _finetune_run_locked(job)


def _finetune_run_locked(job: FineTune) -> FineTune:
    from backend.scoring.services import model_version_deployed

    base = model_version_deployed()
    out = Path(settings.VAR_DIR) / "finetune" / str(job.pk)
    command = _runner_command(job, base, out)
    resuming = _resumable(out, command)
    if not resuming:
        if out.exists():
            shutil.rmtree(out)  # another model or other parameters: start over
        out.mkdir(parents=True)
        (out / "command.json").write_text(json.dumps(command))
    FineTune.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING,
        base_model=base,
        out_dir=str(out),
        progress=0.0,
        message="resuming from the last epoch" if resuming else "starting",
    )
    result: dict[str, Any] | None = None
    with open(out / "runner.log", "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=settings.BASE_DIR,
            text=True,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if "result" in event:
                result = event["result"]
            else:
                FineTune.objects.filter(pk=job.pk).update(
                    progress=float(event.get("progress", 0.0)),
                    message=str(event.get("message", ""))[:300],
                )
        code = proc.wait()
    if code != 0 or result is None:
        FineTune.objects.filter(pk=job.pk).update(
            status=JobStatus.FAILED,
            message=f"the training process failed (exit {code}); see runner.log",
            finished_at=timezone.now(),
        )
        job.refresh_from_db()
        return job
    candidate = _register_candidate(job, base, result)
    FineTune.objects.filter(pk=job.pk).update(
        status=JobStatus.DONE,
        progress=1.0,
        metrics=result["metrics"],
        candidate=candidate,
        message="done",
        finished_at=timezone.now(),
    )
    job.refresh_from_db()
    return job


def _die_with_parent(parent: int) -> None:
    """In the training child, before exec: the kernel kills it when the worker that started it
    dies (Linux ``PR_SET_PDEATHSIG``), so a killed worker leaves no orphan training into the
    directory that the redelivered task resumes from."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)


def _resumable(out: Path, command: list[str]) -> bool:
    """Whether ``out`` holds an interrupted run of this very command (a worker that died
    mid-training: its task is redelivered once the broker's visibility timeout passes, or at
    once on a worker restart), so the training resumes from its last epoch (``ml train``
    resumes from ``run/last.keras`` and ``run/history.csv``) instead of starting over."""
    try:
        previous = json.loads((out / "command.json").read_text())
    except (OSError, ValueError):
        return False
    run = out / "run"
    return bool(
        previous == command and (run / "last.keras").is_file() and (run / "history.csv").is_file()
    )


def _runner_command(job: FineTune, base: Any, out: Path) -> list[str]:
    p = job.params
    return [
        sys.executable,
        "-m",
        "annotation.ml_runner",
        "--data",
        job.training_set.path,
        "--init",
        str(_base_weights(base)),
        "--out",
        str(out),
        "--epochs",
        str(p["epochs"]),
        "--steps",
        str(p["steps"]),
        "--crop",
        str(p["crop"]),
        "--batch",
        str(p["batch"]),
        "--lr",
        str(p["learning_rate"]),
    ]


def _register_candidate(job: FineTune, base: Any, result: dict[str, Any]) -> Any:
    from backend.scoring.services import model_version_register

    ts = job.training_set
    card = (
        f"Fine-tuned from {base} on training set {ts.pk} (campaign {ts.campaign_id}, version "
        f"{ts.version}, sha256 {ts.sha256}, simulated share {ts.simulated_ratio:.0%}) with "
        f"{json.dumps(job.params)}; command: python -m annotation.ml_runner (ml.model.train "
        f"with init = the deployed weights). Figures: {json.dumps(result['metrics'])}"
    )
    return model_version_register(
        weights_path=Path(result["best"]),
        name="artiscan-finetuned",
        version=f"c{str(ts.campaign_id)[:8]}-v{ts.version}-{str(job.pk)[:8]}",
        metrics=result["metrics"],
        card=card,
        registered_by=job.requested_by,
    )


def _require_model_authority(user: User) -> None:
    """One model is deployed for every site, so changing it is a decision for every site: the
    superuser, or a lead of every site (a lead of one site must not change another's model)."""
    from backend.accounts.models import Site

    if user.is_superuser:
        return
    if any(not is_lead(user=user, site_id=pk) for pk in Site.objects.values_list("pk", flat=True)):
        raise PermissionDenied(
            "the deployed model serves every site: only the superuser or a lead of every site "
            "may promote or roll back"
        )


def finetune_promote(*, user: User, finetune: FineTune, reason: str, rescore: bool = False) -> Any:
    """Deploy the candidate (``model_promote`` records who and why); optionally re-score the
    campaign's series with it."""
    from backend.scoring.services import model_promote, series_rescore

    if not is_lead(user=user, site_id=finetune.site_id):
        raise Refused(
            "only annotation leads promote",
            target=AuditTarget("finetune", str(finetune.pk), finetune.site_id),
        )
    _require_model_authority(user)
    if finetune.candidate is None:
        raise ValidationError("this run has no registered candidate")
    if not reason.strip():
        raise ValidationError("say why")
    promoted = model_promote(model_version=finetune.candidate, user=user, reason=reason.strip())
    if rescore:
        series_ids = list(
            CampaignSeries.objects.filter(campaign=finetune.training_set.campaign).values_list(
                "series_id", flat=True
            )
        )
        series_rescore(series_ids=series_ids, model_version=finetune.candidate, requested_by=user)
    return promoted


def model_rollback_by_lead(*, user: User, site_id: int, reason: str) -> Any:
    from backend.scoring.services import model_rollback

    if not is_lead(user=user, site_id=site_id):
        raise Refused(
            "only annotation leads roll back",
            target=AuditTarget("site", str(site_id), site_id),
        )
    _require_model_authority(user)
    if not reason.strip():
        raise ValidationError("say why")
    return model_rollback(user=user, reason=reason.strip())
