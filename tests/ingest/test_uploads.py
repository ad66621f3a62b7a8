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
