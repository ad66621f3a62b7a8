"""``series_ingest``: the one door every way in (upload, STOW-RS, C-STORE, Orthanc) goes through.

De-identification happens here, in the receiving process, before anything is written: the
original bytes are never stored except encrypted in the quarantine when they are refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone
from pydicom import Dataset

from backend.accounts.models import Site
from backend.config.connections import forget_handled_errors
from backend.config.prepared import (
    PreparedInsert,
    PreparedQuery,
    PreparedUpdate,
    field_names,
    instance_from,
)
from backend.deid.profile import (
    ENHANCED_MR_IMAGE,
    MR_IMAGE,
    Rejected,
    deidentify_file,
    pseudonymous_uid,
    site_key,
)
from backend.dicomweb.metadata import instance_metadata_create
from backend.ingest.dispatch import ingest_announce
from backend.ingest.models import OrthancSource, QuarantinedFile
from backend.ingest.orthanc import OrthancClient, OrthancError
from backend.storage.store import (
    OwnedWrites,
    StoreFull,
    store_delete,
    store_put,
    store_sealed_size,
    store_space_check,
)
from backend.studies.models import Instance, Scanner, Series, Study
from ml.header import frame_values

logger = logging.getLogger(__name__)

Status = Literal["accepted", "duplicate", "rejected"]


@dataclass(frozen=True)
class IngestOutcome:
    status: Status
    reason: str = ""
    sop_uid: str = ""  # the pseudonymous UID: safe to return and log
    sop_class_uid: str = ""
    instance_id: str = ""
    series_id: str = ""
    study_id: str = ""
    series_uid: str = ""  # pseudonymous too
    study_uid: str = ""


def _dicom_date(value: Any) -> date | None:
    """A DA value ("YYYYMMDD", or the old "YYYY.MM.DD") as a date; None when absent or invalid."""
    text = str(value or "").strip().replace(".", "")
    try:
        return datetime.strptime(text, "%Y%m%d").date() if len(text) == 8 else None
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


_ACQUISITION_KEYWORDS = (
    "MagneticFieldStrength",
    "PixelBandwidth",
    "InPlanePhaseEncodingDirection",
    "PixelSpacing",
    "SliceThickness",
    "EchoTime",
    "RepetitionTime",
    "InversionTime",
    "FlipAngle",
)


def acquisition_values(ds: Dataset) -> dict[str, Any]:
    """The header values the model and the operator advice need, from a classic MR image or
    from the first frame of an Enhanced MR one (its functional groups: ``ml.header``)."""
    values = frame_values(ds, keywords=_ACQUISITION_KEYWORDS)
    spacing = values["PixelSpacing"]
    try:
        row_mm, col_mm = (float(spacing[0]), float(spacing[1])) if spacing else (None, None)
    except (TypeError, ValueError, IndexError):
        row_mm = col_mm = None
    phase = str(values["InPlanePhaseEncodingDirection"] or "").upper()
    return {
        "field_strength_t": _number(values["MagneticFieldStrength"]),
        "pixel_bandwidth_hz": _number(values["PixelBandwidth"]),
        "phase_encode_direction": phase if phase in ("ROW", "COL") else "",
        "pixel_spacing_row_mm": row_mm,
        "pixel_spacing_col_mm": col_mm,
        "slice_thickness_mm": _number(values["SliceThickness"]),
        "echo_time_ms": _number(values["EchoTime"]),
        "repetition_time_ms": _number(values["RepetitionTime"]),
        "inversion_time_ms": _number(values["InversionTime"]),
        "flip_angle_deg": _number(values["FlipAngle"]),
    }


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _quarantine(*, site: Site, data: bytes, source: str, reason: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    key = f"quarantine/{site.pk}/{digest}.bin"
    store_put(key, data)
    QuarantinedFile.objects.create(
        site=site,
        source=source,
        reason=reason[:300],
        storage_key=key,
        size_bytes=len(data),
        sha256=digest,
        expires_at=timezone.now() + timedelta(days=settings.ARTISCAN_QUARANTINE_DAYS),
    )


@dataclass(frozen=True)
class _Clean:
    """One file past the door: de-identified, serialised, ready to store."""

    ds: Dataset
    scanner: str
    storage_key: str
    data: bytes
    # Read from ``ds`` once, at the door: each look-up of a data set's attribute costs
    # pydicom a tag search, and a batch looked each of these up four times per file.
    study_uid: str
    series_uid: str
    sop_uid: str
    patient: str  # the patient pseudonym (the de-identified PatientID)
    # The file as it came (a view into the request body, or the bytes the sender gave: no
    # copy), quarantined if the file is refused after de-identification (``MIXED_PATIENTS``).
    original: bytes | memoryview


NOT_OF_THE_STUDY = "not an instance of the study named in the request"
# One study holds one patient: a study's pseudonym and date shift are its patient's, and a
# second patient in it would be a second of each (security checklist D-12). A sender that
# mixes two patients in one StudyInstanceUID has a fault a person must sort out: the file is
# quarantined with the original, not merged.
MIXED_PATIENTS = "another patient's image in this study (one study holds one patient)"


def _site_key(site: Site) -> bytes:
    """The site's own de-identification key (``backend.deid.profile.site_key``)."""
    return site_key(settings.DEID_KEY, str(site.pk))


def _door(
    *, site: Site, data: bytes | memoryview, source: str, study: str | None = None
) -> _Clean | IngestOutcome:
    """De-identify one file, or quarantine it and say why. ``study``: the pseudonymous
    StudyInstanceUID the file must have (a STOW-RS to ``/studies/{study}``); a file of another
    study is refused without being stored or quarantined (the sender still has it). ``data``
    may be a view into a request body: it is copied here, one file at a time."""
    original = data
    data = bytes(data)
    try:
        # The profile on the encoded bytes where it can, the dataset path where it cannot (the
        # same profile and refusals either way: backend.deid.profile.deidentify_file).
        result = deidentify_file(
            data, key=_site_key(site), max_bytes=settings.ARTISCAN_MAX_INSTANCE_BYTES
        )
    except Rejected as refusal:
        _quarantine(site=site, data=data, source=source, reason=refusal.reason)
        logger.info("refused a %s file: %s", source, refusal.reason)
        return IngestOutcome(status="rejected", reason=refusal.reason)
    ds = result.ds
    study_uid = str(ds.StudyInstanceUID)
    if study is not None and study_uid != study:
        return IngestOutcome(status="rejected", reason=NOT_OF_THE_STUDY)
    series_uid, sop_uid = str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    return _Clean(
        ds=ds,
        scanner=result.scanner,
        storage_key=f"instances/{site.pk}/{study_uid}/{series_uid}/{sop_uid}.dcm",
        data=result.data,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        patient=str(ds.get("PatientID", "")),
        original=original,
    )


def instance_ingest(*, site: Site, data: bytes, source: str) -> IngestOutcome:
    """De-identify one DICOM file and store it; refused files go to the quarantine.

    Idempotent: the same instance sent twice is stored once (the pseudonymous UIDs are a keyed
    function of the originals, so a re-send maps to the same row).
    """
    return series_ingest(site=site, files=[data], source=source)[0]


# Files de-identified and committed together: up to INGEST_BATCH files, and no more files once
# the batch holds INGEST_BATCH_BYTES of them. A batch's de-identified files are all in memory at
# once, beside the request body they came from: 64 slices of 384x512 are 25 MB and stay one
# batch (one transaction, one disk sync: at 8 MB a 50-slice STOW-RS went in three and ran
# ~15 % slower), while 64 multi-frame Enhanced MR files (9 MB for 24 frames) would be 580 MB.
INGEST_BATCH = 64
INGEST_BATCH_BYTES = 32 * 1024 * 1024


def _batches(files: Iterable[bytes | memoryview]) -> Iterator[list[bytes | memoryview]]:
    """``files`` in ingest batches, in order (at least one file in each)."""
    batch: list[bytes | memoryview] = []
    size = 0
    for data in files:
        batch.append(data)
        size += len(data)
        if len(batch) == INGEST_BATCH or size >= INGEST_BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def in_one_batch(files: Sequence[bytes | memoryview]) -> bool:
    """Whether ``series_ingest`` takes ``files`` in one batch (one transaction)."""
    return len(list(_batches(files))) <= 1


Recorded = Callable[[list[IngestOutcome]], None]


def series_ingest(
    *,
    site: Site,
    files: Iterable[bytes | memoryview],
    source: str,
    recorded: Recorded | None = None,
    study_uid: str | None = None,
) -> list[IngestOutcome]:
    """Ingest many files (one series or several); each file stands or falls on its own.

    Every file is de-identified on its own; the accepted ones of each batch (``_batches``: up
    to ``INGEST_BATCH`` files and ``INGEST_BATCH_BYTES``) are stored with one durable sync and
    recorded in one transaction, with one scoring request and one event per series. Nothing is
    answered before the files are durable and the rows committed.

    ``recorded`` is called with each batch's outcomes inside the transaction that records it
    (what it writes commits or rolls back with the batch, in the same commit: the audit rows of
    a STOW-RS); for a batch with nothing to record, outside any transaction.

    ``study_uid``: the sender's (original) StudyInstanceUID every file must belong to, as a
    STOW-RS to ``/studies/{study}`` names it; files of other studies are refused.
    """
    # A full store turns the whole request away before anything is written (StoreFull: the
    # sender retries), quarantine included.
    store_space_check()
    study = None if study_uid is None else pseudonymous_uid(study_uid, key=_site_key(site))
    outcomes: list[IngestOutcome] = []
    try:
        for batch in _batches(files):
            outcomes += _batch_ingest(
                site=site, files=batch, source=source, recorded=recorded, study=study
            )
    finally:
        # A lost race (two senders making one series) must not keep these files in memory
        # through the connection (the C-STORE and Orthanc processes serve no requests).
        forget_handled_errors()
    return outcomes


def _batch_ingest(
    *,
    site: Site,
    files: list[bytes | memoryview],
    source: str,
    recorded: Recorded | None = None,
    study: str | None = None,
) -> list[IngestOutcome]:
    results: list[_Clean | IngestOutcome] = [
        _door(site=site, data=data, source=source, study=study) for data in files
    ]
    if not any(isinstance(r, _Clean) for r in results):
        refused = [r for r in results if isinstance(r, IngestOutcome)]
        if recorded is not None:
            recorded(refused)
        return refused
    mixed: list[_Clean] = []  # refused by _record_batch, quarantined once it has committed
    try:
        with transaction.atomic():
            outcomes = _record_batch(site, results, source, recorded=recorded, mixed=mixed)
        _quarantine_mixed(site, mixed, source)
        return outcomes
    except IntegrityError:
        # A concurrent copy of one of these instances won the race (the unique constraint saw
        # it): record them one by one, where a lost race reads as a duplicate.
        outcomes = []
        mixed = []
        for result in results:
            if isinstance(result, IngestOutcome):
                outcomes.append(result)
                continue
            try:
                with transaction.atomic():
                    outcomes += _record_batch(site, [result], source, mixed=mixed)
            except IntegrityError:
                outcomes.append(_duplicate_of(site, result))
        _quarantine_mixed(site, mixed, source)
        if recorded is not None:
            with transaction.atomic():
                recorded(outcomes)
        return outcomes


def _quarantine_mixed(site: Site, mixed: list[_Clean], source: str) -> None:
    for clean in mixed:
        _quarantine(site=site, data=bytes(clean.original), source=source, reason=MIXED_PATIENTS)
        logger.info("refused a %s file: %s", source, MIXED_PATIENTS)
    mixed.clear()


def _duplicate_of(site: Site, clean: _Clean) -> IngestOutcome:
    existing = Instance.objects.select_related("series").get(
        series__study__site=site, series__series_uid=clean.series_uid, sop_uid=clean.sop_uid
    )
    return _outcome("duplicate", existing, existing.series, clean)


def _outcome(status: Status, instance: Instance, series: Series, clean: _Clean) -> IngestOutcome:
    return IngestOutcome(
        status=status,
        sop_uid=instance.sop_uid,
        sop_class_uid=instance.sop_class_uid,
        instance_id=str(instance.pk),
        series_id=str(series.pk),
        study_id=str(series.study_id),
        series_uid=clean.series_uid,
        study_uid=clean.study_uid,
    )


def _known_series(site_id: int, study_uid: str, series_uid: str) -> QuerySet[Series]:
    return Series.objects.filter(
        study__site_id=site_id, study__study_uid=study_uid, series_uid=series_uid
    ).order_by("pk")


# The series lookup every batch makes (every slice of a one-slice STOW-RS or C-STORE), compiled
# once: built by the ORM each time it cost ~30 times its SQL (backend.config.prepared).
_SERIES_WIDTH = len(field_names(Series))
_INSERT_INSTANCES = PreparedInsert(Instance)
_COUNT_ARRIVALS = PreparedUpdate(
    lambda series_id, arrived: (
        Series.objects.filter(pk=series_id),
        {"instance_count": F("instance_count") + arrived},
    ),
    uuid.UUID, int,
)  # fmt: skip
_KNOWN_SERIES = PreparedQuery(
    lambda site_id, study_uid, series_uid: _known_series(site_id, study_uid, series_uid)
    .values_list(*field_names(Series), "study__patient_pseudonym")[:1],
    int, str, str,
)  # fmt: skip
_KNOWN_SERIES_HOLDING = PreparedQuery(
    lambda site_id, study_uid, series_uid, sop_uid: _known_series(site_id, study_uid, series_uid)
    .annotate(holds=Exists(Instance.objects.filter(series=OuterRef("pk"), sop_uid=sop_uid)))
    .values_list(*field_names(Series), "study__patient_pseudonym", "holds")[:1],
    int, str, str, str,
)  # fmt: skip


def _study_claim(study_id: Any, clean: _Clean) -> bool:
    """Whether the study's patient is ``clean``'s, making it so if the study has none yet (one
    recorded before its patient was kept: its next file's patient is its patient from then on).
    A concurrent sender may have just given it one: then that one is compared."""
    unclaimed = Study.objects.filter(pk=study_id, patient_pseudonym="")
    if unclaimed.update(patient_pseudonym=clean.patient):
        return True
    return Study.objects.filter(pk=study_id, patient_pseudonym=clean.patient).exists()


def _series_for(site: Site, clean: _Clean, sop_uids: list[str]) -> tuple[Series | None, bool]:
    """The series of ``clean`` (made, with its study and scanner, for its first slice), and
    whether it may already hold one of ``sop_uids`` (False: it holds none of them); no series
    if the study is another patient's (``MIXED_PATIENTS``: nothing is made for the file)."""
    # Every slice after a series' first finds it here, in one query instead of three; a
    # request of one slice (STOW-RS one instance at a time, C-STORE) learns in the same query
    # whether that slice is stored already.
    ds, scanner_pseudonym = clean.ds, clean.scanner
    study_uid, series_uid = clean.study_uid, clean.series_uid
    if len(sop_uids) == 1:
        row = _KNOWN_SERIES_HOLDING.first(site.pk, study_uid, series_uid, sop_uids[0])
    else:
        row = _KNOWN_SERIES.first(site.pk, study_uid, series_uid)
    if row is not None:
        known = instance_from(Series, row[:_SERIES_WIDTH])
        if row[_SERIES_WIDTH] != clean.patient and not _study_claim(known.study_id, clean):
            return None, False
        return known, bool(row[_SERIES_WIDTH + 1]) if len(sop_uids) == 1 else True
    study, made = Study.objects.get_or_create(
        site=site,
        study_uid=study_uid,
        defaults={
            "description": str(ds.get("StudyDescription", ""))[:128],
            "patient_pseudonym": clean.patient,
            "study_date": _dicom_date(ds.get("StudyDate")),
            "study_time": str(ds.get("StudyTime") or "")[:16],
        },
    )
    if not made and study.patient_pseudonym != clean.patient:
        if study.patient_pseudonym or not _study_claim(study.pk, clean):
            return None, False
    if not made and study.study_date is None:
        # The study's first file had no StudyDate (Type 2: may be empty); a later one does.
        found = _dicom_date(ds.get("StudyDate"))
        if found is not None:
            Study.objects.filter(pk=study.pk, study_date__isnull=True).update(study_date=found)
    scanner = None
    if scanner_pseudonym:
        scanner, _ = Scanner.objects.get_or_create(
            site=site,
            pseudonym=scanner_pseudonym,
            defaults={
                "manufacturer": str(ds.get("Manufacturer", ""))[:64],
                "model_name": str(ds.get("ManufacturerModelName", ""))[:64],
                "field_strength_t": _number(
                    frame_values(ds, keywords=("MagneticFieldStrength",))["MagneticFieldStrength"]
                ),
            },
        )
    series, created = Series.objects.get_or_create(
        study=study,
        series_uid=series_uid,
        defaults={
            "site": site,
            "scanner": scanner,
            "series_number": _int(ds, "SeriesNumber"),
            "modality": str(ds.get("Modality", "MR"))[:16],
            "description": str(ds.get("SeriesDescription", ""))[:128],
            "protocol": str(ds.get("ProtocolName", ds.get("SeriesDescription", "")))[:128],
            "sequence_family": str(ds.get("ScanningSequence", ""))[:32],
        },
    )
    # Found rather than made: another sender made it since the query above, and may have
    # stored instances in it.
    return series, not created


def _record_batch(
    site: Site,
    results: list[_Clean | IngestOutcome],
    source: str,
    *,
    recorded: Recorded | None = None,
    mixed: list[_Clean],
) -> list[IngestOutcome]:
    """Store and record the clean files of ``results`` (inside the caller's transaction);
    returns an outcome per item, in order, after handing them to ``recorded`` (in the same
    transaction). Files of a study that holds another patient are refused (``MIXED_PATIENTS``)
    and added to ``mixed``, for the caller to quarantine once the transaction has committed."""
    sops_by_series: dict[tuple[str, str, str], list[str]] = {}
    for r in results:
        if isinstance(r, _Clean):
            series_key = (r.study_uid, r.series_uid, r.patient)
            sops_by_series.setdefault(series_key, []).append(r.sop_uid)
    found: dict[tuple[str, str, str], Series | None] = {}
    may_hold: list[Series] = []  # series that may hold some of these instances already
    for r in results:
        if isinstance(r, _Clean):
            series_key = (r.study_uid, r.series_uid, r.patient)
            if series_key not in found:
                series, holds = _series_for(site, r, sops_by_series[series_key])
                found[series_key] = series
                if series is not None and holds:
                    may_hold.append(series)
    series_by_uid = {k: series for k, series in found.items() if series is not None}
    if len(series_by_uid) < len(found):
        refused = IngestOutcome(status="rejected", reason=MIXED_PATIENTS)
        kept: list[_Clean | IngestOutcome] = []
        for r in results:
            if (
                isinstance(r, _Clean)
                and (r.study_uid, r.series_uid, r.patient) not in series_by_uid
            ):
                mixed.append(r)
                kept.append(refused)
            else:
                kept.append(r)
        results = kept
    existing: dict[tuple[Any, str], Instance] = {}
    if may_hold:
        existing = {
            (i.series_id, i.sop_uid): i
            for i in Instance.objects.filter(
                series__in=may_hold,
                sop_uid__in=[r.sop_uid for r in results if isinstance(r, _Clean)],
            )
        }
    new: dict[tuple[Any, str], tuple[_Clean, Instance]] = {}
    for r in results:
        if not isinstance(r, _Clean):
            continue
        series = series_by_uid[(r.study_uid, r.series_uid, r.patient)]
        uid = (series.pk, r.sop_uid)
        if uid in existing or uid in new:
            continue
        ds = r.ds
        row = Instance(
            series=series,
            site=site,
            sop_uid=r.sop_uid,
            sop_class_uid=str(ds.SOPClassUID),
            instance_number=_int(ds, "InstanceNumber"),
            storage_key=r.storage_key,
            frame_count=_int(ds, "NumberOfFrames") or 1,
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            size_bytes=store_sealed_size(len(r.data)),
            **acquisition_values(ds),
        )
        new[uid] = (r, row)
    # The rows first: once inserted (uncommitted), this transaction owns their keys. Another
    # request with the same instances waits at its own insert until this one ends and then
    # finds them (IntegrityError, a duplicate) without writing: a committed file is never
    # written again, and nothing points at a file before the commit. So the files go straight
    # to their keys with one shared sync, encrypted and written on the writer's thread while the
    # metadata is made here (``OwnedWrites``); the commit waits for them. The rows go in one
    # order (series, SOP UID) whatever the sender's, so two senders of the same instances in
    # different orders do not each wait at the other's rows.
    _INSERT_INSTANCES.insert(
        sorted((row for _, row in new.values()), key=lambda r: (str(r.series_id), r.sop_uid))
    )
    pending: OwnedWrites | None = None
    try:
        if new:
            pending = OwnedWrites()
            pending.add([(clean.storage_key, clean.data) for clean, _ in new.values()])
        # The WADO-RS metadata of each file, made now that its bytes are at hand (no decrypting).
        instance_metadata_create(files=[(row, clean.data) for clean, row in new.values()])
        per_series: dict[Any, list[str]] = {}
        for _, row in new.values():
            per_series.setdefault(row.series_id, []).append(str(row.pk))
        if pending is not None:
            pending.wait()
        outcomes = _outcomes(results, series_by_uid, existing, new)
        if recorded is not None:
            recorded(outcomes)
        for series_id, instance_ids in per_series.items():
            # Counted here, in the same transaction, rather than by a task per instance; last,
            # right before the commit: the update locks the series row until then, and
            # concurrent senders of one series queue on that lock.
            _COUNT_ARRIVALS.run(series_id, len(instance_ids))
    except Exception as exc:
        if pending is not None:
            with contextlib.suppress(Exception):
                pending.wait()  # nothing of it may still be writing when the files go
            # The keys are still this transaction's (it rolls back after this): no orphans.
            # Not after a database error: PostgreSQL has then already ended the transaction and
            # let go of its rows, so a concurrent sender of the same instances may own those
            # keys now and have written its own files there. The files stay, unreferenced (as
            # after a crash): the next copy of each instance replaces its file.
            if not isinstance(exc, DatabaseError):
                for key in pending.keys:
                    with contextlib.suppress(OSError):
                        store_delete(key)
        raise
    if per_series:
        _announce(site_id=site.pk, per_series=per_series, source=source)
    return outcomes


def _outcomes(
    results: list[_Clean | IngestOutcome],
    series_by_uid: dict[tuple[str, str, str], Series],
    existing: dict[tuple[Any, str], Instance],
    new: dict[tuple[Any, str], tuple[_Clean, Instance]],
) -> list[IngestOutcome]:
    outcomes: list[IngestOutcome] = []
    accepted: set[tuple[Any, str]] = set()
    for r in results:
        if not isinstance(r, _Clean):
            outcomes.append(r)
            continue
        series = series_by_uid[(r.study_uid, r.series_uid, r.patient)]
        uid = (series.pk, r.sop_uid)
        if uid in new and uid not in accepted:
            accepted.add(uid)
            outcomes.append(_outcome("accepted", new[uid][1], series, r))
        else:
            outcomes.append(_outcome("duplicate", existing.get(uid) or new[uid][1], series, r))
    return outcomes


def _announce(*, site_id: int, per_series: dict[Any, list[str]], source: str) -> None:
    """After the commit, hand each series' news to this process' dispatcher: it publishes one
    ``instance.received`` event (``instance_id`` the last one received, ``instance_ids`` all of
    them) and one scoring request per series, coalesced with the requests that follow closely,
    off the request's path (``backend.ingest.dispatch``; a periodic sweep covers a lost one).
    A task scores whatever is waiting in its series, so a lone slice is not held back."""
    news = [(str(series_id), ids) for series_id, ids in per_series.items()]

    def hand_over() -> None:
        for series_id, instance_ids in news:
            ingest_announce(
                site_id=site_id, series_id=series_id, instance_ids=instance_ids, source=source
            )

    transaction.on_commit(hand_over)


def _scoring_queue_size() -> int:
    """Messages waiting in the scoring queue."""
    from backend.jobs.services import queue_waiting, task_queue
    from backend.scoring.tasks import series_score_task

    return queue_waiting(task_queue(series_score_task))


def unscored_sweep(*, older_than_s: float | None = None, limit: int = 1000) -> list[str]:
    """Ask again for the scoring of every series with an MR slice that the deployed model has
    neither scored nor quarantined, though it arrived more than ``older_than_s`` seconds ago
    (default ``ARTISCAN_SCORE_SWEEP_AGE_S``), within the last ``ARTISCAN_SCORE_SWEEP_WINDOW_H``
    hours and after the version's promotion (or rollback); returns those series' ids.

    What it covers: a scoring request lost after the commit (the broker was down, the process
    died before it published; ``backend.ingest.dispatch``). It does nothing while the scoring
    queue has requests waiting: the worker is behind, and the series it has not reached yet
    would only be asked for twice; the next sweep after the queue drains finds what is left.
    A request for a series being scored right now costs a task that finds nothing to claim.
    """
    from backend.scoring.models import InstanceScore, ModelPromotion, PromotionKind, SliceAttempt
    from backend.scoring.services import model_version_deployed, series_score_publish

    if older_than_s is None:
        older_than_s = float(settings.ARTISCAN_SCORE_SWEEP_AGE_S)
    if _scoring_queue_size():
        return []
    version = model_version_deployed()
    now = timezone.now()
    # Only slices that arrived while this version was deployed, and recently: older ones were
    # scored (or not) by another version, and scoring them again is `rescore`'s decision, not
    # the sweep's (after a promotion it would otherwise re-score the whole archive). The window
    # also keeps each minute's scan to a day of rows (index on received_at).
    since = now - timedelta(hours=float(settings.ARTISCAN_SCORE_SWEEP_WINDOW_H))
    deployed_at = (
        ModelPromotion.objects.filter(model_version=version)
        .exclude(kind=PromotionKind.INITIAL)
        .order_by("-created_at", "-id")
        .values_list("created_at", flat=True)
        .first()
    )
    scored = InstanceScore.objects.filter(instance=OuterRef("pk"), run__model_version=version)
    quarantined = SliceAttempt.objects.filter(
        instance=OuterRef("pk"), model_version=version, quarantined=True
    )
    candidates = Instance.objects.filter(
        received_at__gte=since,
        received_at__lt=now - timedelta(seconds=older_than_s),
        sop_class_uid__in=(MR_IMAGE, ENHANCED_MR_IMAGE),
    )
    if deployed_at is not None:
        # Before the promotion, only a slice no version scored: its request was lost just
        # before the switch, and nothing else would ever ask for it.
        scored_by_any = InstanceScore.objects.filter(instance=OuterRef("pk"))
        candidates = candidates.filter(Q(received_at__gte=deployed_at) | ~Exists(scored_by_any))
    series_ids = [
        str(s)
        for s in candidates
        # A row without a stored file (the dashboards' synthetic demo history) has nothing to
        # score: asked for, it failed, and its series showed "failed" in the demo's worklist.
        .exclude(storage_key="")
        .exclude(Exists(scored))
        .exclude(Exists(quarantined))
        .values_list("series_id", flat=True)
        .distinct()[:limit]
    ]
    for series_id in series_ids:
        series_score_publish(series_id=series_id)
    if series_ids:
        logger.warning("asked again for the scoring of %d series left unscored", len(series_ids))
    return series_ids


def quarantine_purge(*, now: datetime | None = None) -> int:
    """Delete quarantined originals past their expiry (files first, then rows)."""
    now = now or timezone.now()
    expired = list(QuarantinedFile.objects.filter(expires_at__lte=now))
    for row in expired:
        store_delete(row.storage_key)
        row.delete()
    return len(expired)


@dataclass(frozen=True)
class OrthancPollResult:
    series: int
    outcomes: list[IngestOutcome]


def _orthanc_files(client: OrthancClient, listed: list[str], fetched: list[str]) -> Iterator[bytes]:
    """The files of ``listed``, fetched one at a time as the ingest takes them; ``fetched``
    gets each one's id. A file over the instance size limit is skipped and left in Orthanc,
    with a line in the log (it would be refused, and its quarantined copy truncated)."""
    from backend.ingest.orthanc import OrthancTooLarge

    for instance_id in listed:
        try:
            data = client.instance_file(instance_id, max_bytes=settings.ARTISCAN_MAX_INSTANCE_BYTES)
        except OrthancTooLarge:
            logger.warning(
                "Orthanc instance %s is larger than ARTISCAN_MAX_INSTANCE_MB: left in Orthanc",
                instance_id,
            )
            continue
        fetched.append(instance_id)
        yield data


def orthanc_poll(
    *, source: OrthancSource, client: OrthancClient | None = None
) -> OrthancPollResult:
    """Follow ``source``'s change feed to its end: ingest every StableSeries, remember the last
    change after each one, so a crash or restart resumes without skipping or repeating a series.
    """
    import os

    client = client or OrthancClient(
        source.url,
        username=source.username,
        password=os.environ.get(source.password_env, "") if source.password_env else "",
    )
    outcomes: list[IngestOutcome] = []
    series_done = 0
    done = False
    try:
        while not done:
            changes, last, done = client.changes(since=source.last_change)
            for change in changes:
                if change.change_type == "StableSeries":
                    # The instances as listed now: one that arrives while these are ingested
                    # stays in Orthanc (deleting the whole series deleted it unseen) and comes
                    # back with the series' next StableSeries change.
                    listed = client.series_instances(change.resource_id)
                    fetched: list[str] = []
                    ingested = series_ingest(
                        site=source.site,
                        files=_orthanc_files(client, listed, fetched),
                        source="orthanc",
                    )
                    outcomes += ingested
                    series_done += 1
                    if source.delete_after_ingest:
                        # One outcome per file fetched, in order: stored, a duplicate of a
                        # stored one, or refused with its original kept in the quarantine. One
                        # too large to fetch stays in Orthanc.
                        for instance_id, _ in zip(fetched, ingested, strict=True):
                            client.delete_instance(instance_id)
                source.last_change = change.seq
                source.save(update_fields=["last_change"])
            if not changes:
                source.last_change = max(source.last_change, last)
        source.last_error = ""
    except (OrthancError, StoreFull) as exc:
        # A full store as an Orthanc away: the change is not marked done, the next pass
        # takes it again (the instances wait in Orthanc).
        source.last_error = str(exc)[:300]
        raise
    finally:
        source.last_polled_at = timezone.now()
        source.save(update_fields=["last_change", "last_error", "last_polled_at"])
    return OrthancPollResult(series=series_done, outcomes=outcomes)
