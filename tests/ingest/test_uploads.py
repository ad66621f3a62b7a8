"""Resumable uploads: chunks, resume after a drop, zips of many files, per-file results."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from backend.ingest.models import Upload
from backend.ingest.uploads import upload_process
from backend.storage.store import store_keys
from backend.studies.models import Instance
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = pytest.mark.usefixtures("scratch_store")


def _start(api, persona, data: bytes, name: str = "IM0001") -> dict:
    response = api.as_(persona).post(
        "/api/uploads/", {"filename": name, "size": len(data)}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def _put(api, upload_id: str, offset: int, chunk: bytes):
    return api.put(
        f"/api/uploads/{upload_id}/chunk/?offset={offset}",
        data=chunk,
        content_type="application/octet-stream",
    )


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.mark.django_db
def test_a_dropped_connection_resumes_from_what_arrived(api, operator_a, settings):
    data = to_bytes(mr_dataset(1))
    upload = _start(api, operator_a, data)
    half = len(data) // 2
    assert _put(api, upload["id"], 0, data[:half]).json()["received"] == half
    # The client lost its state: it asks, or sends from 0 and is told where to go on.
    assert api.get(f"/api/uploads/{upload['id']}/").json()["received"] == half
    conflict = _put(api, upload["id"], 0, data[:half])
    assert conflict.status_code == 409 and conflict.json()["received"] == half
    assert _put(api, upload["id"], half, data[half:]).json()["received"] == len(data)
    row = Upload.objects.get(pk=upload["id"])
    assert row.chunks == 2
    # Waiting chunks are encrypted at rest like everything else in the store.
    for key in store_keys("uploads"):
        assert b"ZQXCANARYFAMILY" not in (Path(settings.MEDIA_ROOT) / key).read_bytes()


@pytest.mark.django_db
def test_a_zip_of_good_and_bad_files_gets_one_result_per_file(operator_a, site_a):
    files = {
        "series/IM1": to_bytes(mr_dataset(1)),
        "series/IM2": to_bytes(mr_dataset(2)),
        "series/readme.txt": b"not dicom",
        "__MACOSX/series/._IM1": b"resource fork",
    }
    data = _zip(files)
    upload = Upload.objects.create(
        user=operator_a.user, site=site_a, filename="s.zip", size=len(data)
    )
    from backend.ingest.uploads import upload_append

    upload_append(upload_id=str(upload.pk), offset=0, data=data)
    done = upload_process(upload_id=str(upload.pk))
    assert done.status == "done" and (done.files_total, done.files_done) == (3, 3)
    assert sorted((r["name"], r["status"]) for r in done.results) == [
        ("IM1", "accepted"),
        ("IM2", "accepted"),
        ("readme.txt", "rejected"),
    ]
    assert Instance.objects.filter(site=site_a).count() == 2
    assert not [k for k in store_keys() if k.startswith("uploads/")]  # chunks are gone


@pytest.mark.django_db
def test_a_zip_with_too_many_files_fails_with_a_reason(operator_a, site_a, monkeypatch):
    import backend.ingest.uploads as uploads

    monkeypatch.setattr(uploads, "MAX_ZIP_MEMBERS", 2)
    data = _zip({f"f{i}": b"x" for i in range(3)})
    upload = Upload.objects.create(
        user=operator_a.user, site=site_a, filename="z.zip", size=len(data)
    )
    uploads.upload_append(upload_id=str(upload.pk), offset=0, data=data)
    done = upload_process(upload_id=str(upload.pk))
    assert (done.status, done.error) == ("failed", "a zip may hold at most 2 files")


@pytest.mark.django_db
def test_an_upload_announced_over_2_gb_is_refused(api, operator_a):
    response = api.as_(operator_a).post(
        "/api/uploads/", {"filename": "big.zip", "size": 3 * 2**30}, format="json"
    )
    assert response.status_code == 413


@pytest.mark.django_db
def test_more_bytes_than_announced_are_refused(api, operator_a):
    upload = _start(api, operator_a, b"1234")
    assert _put(api, upload["id"], 0, b"123456").status_code == 400


@pytest.mark.django_db
def test_another_user_cannot_see_or_feed_an_upload(api, operator_a, radiologist_a):
    upload = _start(api, operator_a, b"1234")
    api.as_(radiologist_a)
    assert api.get(f"/api/uploads/{upload['id']}/").status_code == 404
    assert _put(api, upload["id"], 0, b"12").status_code == 404


@pytest.mark.django_db
def test_an_annotator_may_not_upload(api, annotator_a):
    response = api.as_(annotator_a).post(
        "/api/uploads/", {"filename": "x", "size": 10}, format="json"
    )
    assert response.status_code == 403


@pytest.mark.django_db
def test_an_outage_while_processing_keeps_the_chunks_for_the_retry(operator_a, site_a, monkeypatch):
    """The database going away half-way (a fault caused here by raising the error Django
    raises) must not delete the upload's chunks: the task retries and processes it whole."""
    from django.db import OperationalError

    import backend.ingest.uploads as uploads

    data = _zip({"IM1": to_bytes(mr_dataset(1)), "IM2": to_bytes(mr_dataset(2))})
    upload = Upload.objects.create(
        user=operator_a.user, site=site_a, filename="s.zip", size=len(data)
    )
    uploads.upload_append(upload_id=str(upload.pk), offset=0, data=data)
    real, calls = uploads.instance_ingest, []

    def away_on_the_second(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OperationalError("server closed the connection unexpectedly")
        return real(**kwargs)

    monkeypatch.setattr(uploads, "instance_ingest", away_on_the_second)
    with pytest.raises(OperationalError):
        upload_process(upload_id=str(upload.pk))
    assert [k for k in store_keys() if k.startswith("uploads/")]  # the chunks wait
    done = upload_process(upload_id=str(upload.pk))  # the retry
    assert done.status == "done"
    assert sorted((r["name"], r["status"]) for r in done.results) == [
        ("IM1", "duplicate"),
        ("IM2", "accepted"),
    ]
    assert not [k for k in store_keys() if k.startswith("uploads/")]


@pytest.mark.django_db
def test_uploads_whose_processing_will_not_finish_fail_and_lose_their_chunks(
    operator_a, site_a, settings
):
    """An upload whose task was quarantined, or that waited ARTISCAN_UPLOAD_STUCK_H queued (its
    message lost), stayed "queued" with its original chunks in the store for good."""
    from datetime import timedelta

    from django.utils import timezone

    from backend.ingest.tasks import ingest_purge_task
    from backend.ingest.uploads import UPLOAD_PROCESS_TASK, upload_append
    from backend.jobs.models import JobRecord, JobState

    settings.ARTISCAN_UPLOAD_STUCK_H = 6
    data = to_bytes(mr_dataset(1))
    rows = {}
    for name in ("poison", "lost", "recent"):
        rows[name] = Upload.objects.create(
            user=operator_a.user, site=site_a, filename=name, size=len(data)
        )
        upload_append(upload_id=str(rows[name].pk), offset=0, data=data)
    Upload.objects.filter(pk__in=[r.pk for r in rows.values()]).update(status="queued")
    Upload.objects.filter(pk=rows["lost"].pk).update(created_at=timezone.now() - timedelta(hours=7))
    JobRecord.objects.create(
        task_id="t-poison",
        name=UPLOAD_PROCESS_TASK,
        subject=str(rows["poison"].pk),
        state=JobState.QUARANTINED,
        attempts=4,
    )
    assert ingest_purge_task() == 2
    ended = {name: Upload.objects.get(pk=row.pk) for name, row in rows.items()}
    assert ended["poison"].status == ended["lost"].status == "failed"
    assert "kept failing" in ended["poison"].error
    assert "did not finish" in ended["lost"].error
    assert ended["recent"].status == "queued"
    assert [k for k in store_keys() if k.startswith("uploads/")] == [
        f"uploads/{rows['recent'].pk}/000000.part"
    ]
    # A late delivery of an ended upload's task finds nothing to do.
    assert upload_process(upload_id=str(rows["lost"].pk)).status == "failed"


def test_beat_runs_the_purge():
    """Refused originals past their expiry were deleted only by a command nobody scheduled."""
    from django.conf import settings

    from backend.config.celery import app
    from backend.ingest.tasks import ingest_purge_task

    app.loader.import_default_modules()
    entry = settings.CELERY_BEAT_SCHEDULE["ingest-purge"]
    assert app.tasks[entry["task"]].run is ingest_purge_task.run


def _announce(api, persona, size: int):
    return api.as_(persona).post(
        "/api/uploads/", {"filename": "x.zip", "size": size}, format="json"
    )


@pytest.mark.django_db
def test_unfinished_uploads_are_held_to_a_quota_per_user_and_per_site(api, operator_a, settings):
    """Security checklist H-02: chunks wait in the store, so what one user's (one site's)
    unfinished uploads may announce is bounded; an upload counts with its announced size from
    its start; finished and cancelled ones no longer count."""
    from tests.conftest import _persona

    settings.ARTISCAN_UPLOAD_QUOTA_USER_BYTES = 100
    settings.ARTISCAN_UPLOAD_QUOTA_SITE_BYTES = 150
    first = _announce(api, operator_a, 60).json()
    refused = _announce(api, operator_a, 41)
    assert refused.status_code == 413
    body = refused.json()
    assert "quota" in body["detail"] and (body["quota_bytes"], body["pending_bytes"]) == (100, 60)
    assert _announce(api, operator_a, 40).status_code == 201  # exactly the quota
    other = _persona("op_a2", operator_a.site, "operator")
    assert _announce(api, other, 50).status_code == 201  # the site's 150, exactly
    site_refused = _announce(api, other, 1)
    assert site_refused.status_code == 413 and "your site" in site_refused.json()["detail"]
    # Cancelling frees the share: the chunks go at once, the row stays, failed, with why.
    _put(api.as_(operator_a), first["id"], 0, b"x" * 10)
    cancelled = api.as_(operator_a).delete(f"/api/uploads/{first['id']}/")
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["error"]) == (
        "failed",
        "cancelled by the sender",
    )
    assert not [k for k in store_keys() if first["id"] in k]
    assert _announce(api, other, 50).status_code == 201
    # Only the sender cancels, and only while receiving.
    assert api.as_(other).delete(f"/api/uploads/{first['id']}/").status_code == 404
    again = api.as_(operator_a).delete(f"/api/uploads/{first['id']}/")
    assert again.status_code == 409
    assert Upload.objects.filter(status="receiving").count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_second_delivery_leaves_an_upload_being_processed_alone(api, operator_a):
    """A message published again (``upload_requeue_lost``) or delivered again while the first
    delivery still runs must not process the upload a second time beside it: the first holds
    the upload's advisory lock; once it is gone (its worker died) the next delivery runs."""
    from django.db import connections

    from backend.jobs.services import JobBusy, job_lock_key

    data = to_bytes(mr_dataset(6))
    upload = _start(api, operator_a, data)
    _put(api, upload["id"], 0, data)
    # Queued as completing it would, without a message: a worker of the session must not
    # take it first.
    Upload.objects.filter(pk=upload["id"]).update(status="queued")
    first = connections.create_connection("default")  # the worker of the first delivery
    try:
        with first.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [job_lock_key(upload["id"])])
        with pytest.raises(JobBusy):  # the task tries again later (upload_process_task)
            upload_process(upload_id=upload["id"])
        assert Upload.objects.get(pk=upload["id"]).status == "queued"
    finally:
        first.close()  # the first worker dies: PostgreSQL lets go of its lock
    done = upload_process(upload_id=upload["id"])
    assert done.status == "done" and [r["status"] for r in done.results] == ["accepted"]


@pytest.mark.django_db
def test_a_full_store_keeps_uploads_waiting_with_their_chunks(api, operator_a, settings):
    """Below the store's free-space floor (security checklist O-06) chunks are turned away with
    a 503 (the page retries), and a queued upload is left as it is — chunks and all — for its
    task to try again later (upload_process_task retries StoreFull every few minutes)."""
    from backend.storage.store import StoreFull

    data = to_bytes(mr_dataset(7))
    upload = _start(api, operator_a, data)
    settings.ARTISCAN_STORE_MIN_FREE_MB = 2**40  # more than any disk has free
    refused = _put(api, upload["id"], 0, data)
    assert refused.status_code == 503 and "store is full" in refused.json()["detail"]
    assert (
        api.post("/api/uploads/", {"filename": "x", "size": 10}, format="json").status_code == 503
    )
    settings.ARTISCAN_STORE_MIN_FREE_MB = 1
    assert _put(api, upload["id"], 0, data).status_code == 200
    Upload.objects.filter(pk=upload["id"]).update(status="queued")  # as completing it would
    settings.ARTISCAN_STORE_MIN_FREE_MB = 2**40
    with pytest.raises(StoreFull):
        upload_process(upload_id=upload["id"])
    waiting = Upload.objects.get(pk=upload["id"])
    assert waiting.status == "queued" and [k for k in store_keys() if upload["id"] in k]
    settings.ARTISCAN_STORE_MIN_FREE_MB = 1
    done = upload_process(upload_id=upload["id"])
    assert done.status == "done" and [r["status"] for r in done.results] == ["accepted"]


def _chunked(site, user, data: bytes, size: int, name: str = "s.zip") -> Upload:
    from backend.ingest.uploads import upload_append

    upload = Upload.objects.create(user=user, site=site, filename=name, size=len(data))
    for offset in range(0, len(data), size):
        upload_append(upload_id=str(upload.pk), offset=offset, data=data[offset : offset + size])
    upload.refresh_from_db()
    return upload


@pytest.mark.django_db
def test_the_stored_chunks_read_as_one_seekable_file(operator_a, site_a):
    """Any read at any offset equals the bytes sent, across chunk boundaries, one chunk held
    decrypted at a time."""
    import numpy as np

    from backend.ingest.uploads import StoredChunks, _chunk_key

    data = np.random.default_rng(0).bytes(10_000)
    upload = _chunked(site_a, operator_a.user, data, 777, name="blob")
    assert sum(upload.chunk_sizes) == len(data) and upload.chunk_sizes[0] == 777
    keys = [_chunk_key(upload, i) for i in range(upload.chunks)]
    # With the recorded sizes, and without (an upload from before they were recorded).
    assert StoredChunks(keys).seek(0, io.SEEK_END) == len(data)
    reader = StoredChunks(keys, upload.chunk_sizes)
    assert reader.seek(0, io.SEEK_END) == len(data)
    rng = np.random.default_rng(1)
    for _ in range(200):
        at, n = int(rng.integers(0, len(data) + 50)), int(rng.integers(0, 3000))
        reader.seek(at)
        assert reader.read(n) == data[at : at + n]
        assert reader.tell() == (min(at + n, len(data)) if at <= len(data) else at)
    reader.seek(-10, io.SEEK_END)
    assert reader.read() == data[-10:]
    with pytest.raises(OSError):
        reader.seek(-1)


@pytest.mark.django_db
def test_a_zip_in_many_chunks_is_read_in_place_and_nothing_is_written_in_clear(
    operator_a, site_a, settings, monkeypatch
):
    """While the members are ingested, no file this process holds open (an unlinked temporary
    file included: /proc/self/fd still reads it) contains the original's identifiers."""
    import os

    import backend.ingest.uploads as uploads

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:  # the names readable as sent
        for i in (1, 2, 3):
            archive.writestr(f"series/IM{i}", to_bytes(mr_dataset(i)))
    assert b"ZQXCANARYFAMILY" in out.getvalue()
    upload = _chunked(site_a, operator_a.user, out.getvalue(), 1500)
    assert upload.chunks > 3
    clear: list[str] = []
    real = uploads.instance_ingest

    def look_then_ingest(**kwargs):
        for fd in os.listdir("/proc/self/fd"):
            path = f"/proc/self/fd/{fd}"
            try:
                target = os.readlink(path)
                if target.startswith("/") and os.path.isfile(path):
                    with open(path, "rb") as f:
                        if b"ZQXCANARYFAMILY" in f.read(64 * 2**20):
                            clear.append(target)
            except OSError:
                continue
        return real(**kwargs)

    monkeypatch.setattr(uploads, "instance_ingest", look_then_ingest)
    done = upload_process(upload_id=str(upload.pk))
    assert done.status == "done" and [r["status"] for r in done.results] == ["accepted"] * 3
    assert clear == []


@pytest.mark.django_db
def test_a_single_file_over_the_instance_limit_is_refused_unread(operator_a, site_a, settings):
    settings.ARTISCAN_MAX_INSTANCE_BYTES = 2000
    data = to_bytes(mr_dataset(1))
    assert len(data) > 2000
    done = upload_process(
        upload_id=str(_chunked(site_a, operator_a.user, data, 1024, name="IM1").pk)
    )
    assert done.status == "done"
    assert done.results == [
        {
            "name": "IM1",
            "status": "rejected",
            "reason": "file larger than the instance size limit",
            "series_id": "",
        }
    ]
    assert not Instance.objects.filter(site=site_a).exists()
