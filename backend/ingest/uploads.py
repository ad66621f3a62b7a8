"""Resumable uploads from the upload page: chunks in, per-file results out.

A dropped connection costs at most one chunk: the client asks how much arrived and goes on from
there. Chunks wait encrypted in the store; a ``cpu`` worker then reads them in place, through a
seekable view that decrypts one chunk at a time (:class:`StoredChunks`: bounded memory whatever
the size, and the original bytes are never written anywhere in clear), ingests each DICOM file —
one file, or every member of a zip of up to 1,000 — through ``instance_ingest``, and deletes the
chunks.
"""

from __future__ import annotations

import bisect
import io
import logging
import re
import zipfile
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from backend.accounts.models import Site, User
from backend.ingest.models import Upload, UploadStatus
from backend.ingest.services import instance_ingest
from backend.jobs.models import JobRecord, JobState
from backend.jobs.services import JobBusy, job_lock
from backend.jobs.tasks import TRANSIENT_ERRORS
from backend.storage.store import (
    StoreFull,
    store_delete,
    store_get,
    store_put,
    store_space_check,
)

MAX_UPLOAD_BYTES = 2 * 2**30
MAX_CHUNK_BYTES = 8 * 2**20
MAX_ZIP_MEMBERS = 1000
_TOO_LARGE = "file larger than the instance size limit"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")
logger = logging.getLogger(__name__)


class UploadError(Exception):
    def __init__(self, message: str, *, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.message, self.status, self.extra = message, status, extra


def _clean_name(filename: str) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return _SAFE_NAME.sub("_", base)[:200] or "upload"


# Uploads whose chunks may still be in the store: what the quotas count.
UNFINISHED = (UploadStatus.RECEIVING, UploadStatus.QUEUED, UploadStatus.PROCESSING)


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def upload_create(*, user: User, site: Site, filename: str, size: int) -> Upload:
    """Start an upload of ``size`` bytes, within the quotas: the unfinished uploads of one user
    (``ARTISCAN_UPLOAD_QUOTA_USER_GB``) and of one site (``ARTISCAN_UPLOAD_QUOTA_SITE_GB``) may
    announce that much at most, so nobody fills the store's disk with chunks (security
    checklist H-02). An upload counts with its announced size from its start, so announcing
    little and sending much, or starting many, does not get round it."""
    if not 0 < size <= MAX_UPLOAD_BYTES:
        raise UploadError("a file must have 1 byte to 2 GiB", status=413)
    _room_for_chunks()
    with transaction.atomic():
        # One start at a time per site and per user (PostgreSQL): two at once must not both
        # fit a quota. NO KEY: the lock must not wait for (nor stall) the ingest transactions
        # that insert rows referring to the site, which take KEY SHARE locks on it.
        for rows in (Site.objects.filter(pk=site.pk), User.objects.filter(pk=user.pk)):
            list(rows.select_for_update(no_key=True).values_list("pk", flat=True))
        unfinished = Upload.objects.filter(status__in=UNFINISHED)
        for who, pending, quota in (
            ("you", unfinished.filter(user=user), settings.ARTISCAN_UPLOAD_QUOTA_USER_BYTES),
            ("your site", unfinished.filter(site=site), settings.ARTISCAN_UPLOAD_QUOTA_SITE_BYTES),
        ):
            held = int(pending.aggregate(total=Sum("size"))["total"] or 0)
            if held + size > quota:
                raise UploadError(
                    f"over the upload quota: unfinished uploads of {who} already hold "
                    f"{_gib(held)} of the {_gib(quota)} allowed, and this file is "
                    f"{_gib(size)}; wait for them to finish, or cancel one (an abandoned "
                    "upload is removed after 48 hours)",
                    status=413,
                    quota_bytes=quota,
                    pending_bytes=held,
                )
        return Upload.objects.create(
            user=user, site=site, filename=_clean_name(filename), size=size
        )


def upload_cancel(*, upload_id: str) -> Upload:
    """Stop an upload that is still receiving: its chunks go at once (and its share of the
    quota with them); the row stays, failed, with the reason. One already handed to a worker
    is the worker's to finish."""
    with transaction.atomic():
        upload = Upload.objects.select_for_update().get(pk=upload_id)
        if upload.status != UploadStatus.RECEIVING:
            raise UploadError("only an upload that is still receiving can be cancelled", status=409)
        upload.status, upload.error = UploadStatus.FAILED, "cancelled by the sender"
        _upload_end(upload)
    return upload


def _chunk_key(upload: Upload, index: int) -> str:
    return f"uploads/{upload.pk}/{index:06d}.part"


def _room_for_chunks() -> None:
    """Chunks are files in the store too: none while it is below its free-space floor."""
    try:
        store_space_check()
    except StoreFull as full:
        raise UploadError(str(full), status=503) from None


def upload_append(*, upload_id: str, offset: int, data: bytes) -> Upload:
    """Append one chunk at ``offset``, which must be what has arrived so far (409 otherwise, with
    the right offset, so the client resumes from there)."""
    with transaction.atomic():
        upload = Upload.objects.select_for_update().get(pk=upload_id)
        if upload.status != UploadStatus.RECEIVING:
            raise UploadError("this upload is complete", status=409, received=upload.received)
        if offset != upload.received:
            raise UploadError("wrong offset", status=409, received=upload.received)
        if not data or len(data) > MAX_CHUNK_BYTES:
            raise UploadError(f"a chunk must have 1 byte to {MAX_CHUNK_BYTES // 2**20} MiB")
        if upload.received + len(data) > upload.size:
            raise UploadError("more bytes than announced", received=upload.received)
        _room_for_chunks()
        store_put(_chunk_key(upload, upload.chunks), data)
        upload.chunks += 1
        upload.received += len(data)
        upload.chunk_sizes = [*upload.chunk_sizes, len(data)]
        upload.save(update_fields=["chunks", "received", "chunk_sizes"])
    return upload


def upload_complete(*, upload_id: str) -> Upload:
    from backend.ingest.tasks import upload_process_task

    with transaction.atomic():
        upload = Upload.objects.select_for_update().get(pk=upload_id)
        if upload.status != UploadStatus.RECEIVING:
            return upload  # completing twice is harmless
        if upload.received != upload.size:
            raise UploadError("the upload is not complete", status=409, received=upload.received)
        upload.status, upload.queued_at = UploadStatus.QUEUED, timezone.now()
        upload.save(update_fields=["status", "queued_at"])
        pk = str(upload.pk)
        # Robust: a broker that is away must not fail the request of an upload already queued
        # (completing again would not publish again); the requeue sweep publishes it later.
        transaction.on_commit(lambda: upload_process_task.delay(pk), robust=True)
    return upload


def _record(upload: Upload, name: str, status: str, reason: str = "", series_id: str = "") -> None:
    upload.results.append(
        {"name": name, "status": status, "reason": reason, "series_id": series_id}
    )
    upload.files_done += 1
    upload.save(update_fields=["results", "files_done"])


def _ingest_one(upload: Upload, name: str, data: bytes) -> None:
    outcome = instance_ingest(site=upload.site, data=data, source="upload")
    _record(upload, name, outcome.status, outcome.reason, outcome.series_id)


def _process_zip(upload: Upload, archive: zipfile.ZipFile) -> None:
    members = [
        m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")
    ]
    if len(members) > MAX_ZIP_MEMBERS:
        raise UploadError(f"a zip may hold at most {MAX_ZIP_MEMBERS} files")
    if sum(m.file_size for m in members) > MAX_UPLOAD_BYTES:
        raise UploadError("the zip unpacks to more than 2 GiB")
    upload.files_total = len(members)
    upload.save(update_fields=["files_total"])
    limit = settings.ARTISCAN_MAX_INSTANCE_BYTES
    for member in members:
        name = _clean_name(member.filename)
        if member.file_size > limit:
            _record(upload, name, "rejected", _TOO_LARGE)
            continue
        try:
            with archive.open(member) as stream:
                data = stream.read(limit + 1)  # the declared size may lie
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError):
            _record(upload, name, "rejected", "unreadable zip member")
            continue
        if len(data) > limit:
            _record(upload, name, "rejected", _TOO_LARGE)
            continue
        _ingest_one(upload, name, data)


def upload_process(*, upload_id: str) -> Upload:
    upload = Upload.objects.select_related("site").get(pk=upload_id)
    if upload.status in (UploadStatus.DONE, UploadStatus.FAILED):
        return upload  # ended for good, its chunks gone (a late redelivery finds nothing to do)
    with job_lock(upload.pk) as ours:
        if not ours:  # another delivery of this task is processing it right now
            raise JobBusy(f"upload {upload.pk} is being processed")
        upload.refresh_from_db()
        if upload.status in (UploadStatus.DONE, UploadStatus.FAILED):
            return upload
        return _upload_process_locked(upload)


class StoredChunks(io.RawIOBase):
    """The upload's bytes as one seekable, read-only file, read from its encrypted chunks in
    the store: one chunk decrypted and held at a time (a zip's central directory at the end,
    then each member, costs a chunk or two each), nothing written in clear."""

    def __init__(self, keys: list[str], sizes: list[int] | None = None) -> None:
        super().__init__()
        self._keys = keys
        if sizes is None or len(sizes) != len(keys):
            # Not recorded (an upload from before they were): one pass, a chunk at a time.
            sizes = [len(store_get(key)) for key in keys]
        self._starts: list[int] = []
        size = 0
        for length in sizes:
            self._starts.append(size)
            size += length
        self._size, self._pos = size, 0
        self._held: tuple[int, bytes] = (-1, b"")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError("seek before the start")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        # RawIOBase's allocates ``size`` bytes first, whatever is left to read.
        left = max(0, self._size - self._pos)
        buffer = bytearray(left if size is None or size < 0 else min(size, left))
        return bytes(buffer[: self.readinto(buffer)])

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            index = bisect.bisect_right(self._starts, self._pos) - 1
            if self._held[0] != index:
                self._held = (index, store_get(self._keys[index]))
            chunk = self._held[1]
            at = self._pos - self._starts[index]
            n = min(len(view) - done, len(chunk) - at)
            view[done : done + n] = chunk[at : at + n]
            done += n
            self._pos += n
        return done


def _upload_process_locked(upload: Upload) -> Upload:
    # A full store: the upload stays as it is, chunks and all, and the task tries again later.
    store_space_check()
    upload.status, upload.results, upload.files_done = UploadStatus.PROCESSING, [], 0
    upload.save(update_fields=["status", "results", "files_done"])
    limit = settings.ARTISCAN_MAX_INSTANCE_BYTES
    try:
        keys = [_chunk_key(upload, i) for i in range(upload.chunks)]
        with StoredChunks(keys, upload.chunk_sizes) as assembled:
            head = assembled.read(4)
            assembled.seek(0)
            if head == b"PK\x03\x04":
                try:
                    with zipfile.ZipFile(assembled) as archive:
                        _process_zip(upload, archive)
                except zipfile.BadZipFile:
                    raise UploadError("not a readable zip file") from None
            else:
                upload.files_total = 1
                upload.save(update_fields=["files_total"])
                # Never read whole past the instance size limit, whatever was announced.
                data = assembled.read(limit + 1)
                if len(data) > limit:
                    _record(upload, upload.filename, "rejected", _TOO_LARGE)
                else:
                    _ingest_one(upload, upload.filename, data)
        upload.status = UploadStatus.DONE
    except UploadError as exc:
        upload.status, upload.error = UploadStatus.FAILED, exc.message[:300]
    except TRANSIENT_ERRORS:
        # The database or the broker went away: the chunks stay and the task's retry processes
        # the upload again (its files already stored come back as duplicates). Deleting them
        # here, then failing to record it, lost the upload.
        raise
    except Exception:
        logger.exception("upload %s could not be processed", upload.pk)
        upload.status, upload.error = UploadStatus.FAILED, "internal error while processing"
    _upload_end(upload)
    return upload


def _upload_end(upload: Upload) -> None:
    """Finished for good (done or failed): the original chunks go, the status is final."""
    for index in range(upload.chunks):
        store_delete(_chunk_key(upload, index))
    upload.finished_at = timezone.now()
    upload.save(update_fields=["status", "error", "finished_at"])


UPLOAD_PROCESS_TASK = "backend.ingest.tasks.upload_process_task"


def upload_fail_stuck(*, now: datetime | None = None) -> int:
    """End uploads whose processing will not finish: their task was quarantined (it kept
    killing its worker), or they have waited ``ARTISCAN_UPLOAD_STUCK_H`` hours queued or in
    processing (the task's message lost: a worker killed on the embedded broker, which does
    not deliver it again). They fail with a reason the page shows, and their chunks — the
    original, identifiable bytes — are deleted instead of staying in the store for good."""
    now = now or timezone.now()
    waiting = Upload.objects.filter(status__in=(UploadStatus.QUEUED, UploadStatus.PROCESSING))
    quarantined = set(
        JobRecord.objects.filter(
            name=UPLOAD_PROCESS_TASK,
            state=JobState.QUARANTINED,
            subject__in=[str(pk) for pk in waiting.values_list("pk", flat=True)],
        ).values_list("subject", flat=True)
    )
    cutoff = now - timedelta(hours=settings.ARTISCAN_UPLOAD_STUCK_H)
    ended = 0
    for upload in waiting.filter(Q(pk__in=quarantined) | Q(created_at__lt=cutoff)):
        if str(upload.pk) in quarantined:
            upload.error = "processing kept failing and was stopped; upload the files again"
        else:
            upload.error = "processing did not finish; upload the files again"
        upload.status = UploadStatus.FAILED
        logger.warning("upload %s ended: %s", upload.pk, upload.error)
        _upload_end(upload)
        ended += 1
    return ended


def upload_requeue_lost(*, older_than_s: float | None = None) -> list[str]:
    """Hand again to a worker each upload queued more than ``older_than_s`` seconds ago (default
    ``ARTISCAN_REQUEUE_AFTER_S``) whose processing no worker ever began: its message was lost
    in the broker (``backend.jobs.services.lost_jobs_requeue``). Returns their ids. Without
    this, such an upload waited ``ARTISCAN_UPLOAD_STUCK_H`` hours and failed."""
    from backend.ingest.tasks import upload_process_task
    from backend.jobs.services import lost_jobs_requeue, task_queue

    if older_than_s is None:
        older_than_s = float(settings.ARTISCAN_REQUEUE_AFTER_S)
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    queued = Upload.objects.filter(status=UploadStatus.QUEUED).filter(
        Q(queued_at__lt=cutoff) | Q(queued_at__isnull=True, created_at__lt=cutoff)
    )
    return lost_jobs_requeue(
        task=upload_process_task,
        queue=task_queue(upload_process_task),
        subjects=[str(pk) for pk in queued.order_by("created_at").values_list("pk", flat=True)],
    )


def upload_purge_stale(*, older_than_hours: int = 48) -> int:
    """Delete uploads that never completed, with their chunks."""
    cutoff = timezone.now() - timedelta(hours=older_than_hours)
    stale = list(Upload.objects.filter(status=UploadStatus.RECEIVING, created_at__lt=cutoff))
    for upload in stale:
        for index in range(upload.chunks):
            store_delete(_chunk_key(upload, index))
        upload.delete()
    return len(stale)
