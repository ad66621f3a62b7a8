"""In Chromium: an MR operator drops files on the upload page and sees one result per file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.studies.models import Instance
from tests.conftest import PASSWORD
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


def test_an_operator_uploads_files_and_sees_each_result(
    page, asgi_server, celery_worker_process, operator_a, site_a, tmp_path
):
    paths = []
    for i in (1, 2):
        path = tmp_path / f"IM000{i}"
        path.write_bytes(to_bytes(mr_dataset(i)))
        paths.append(path)
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    paths.append(junk)

    page.goto(f"http://{asgi_server}/accounts/login/?next=/upload/")
    page.fill("#id_username", "operator_a")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"http://{asgi_server}/upload/")

    page.set_input_files("#files", [str(p) for p in paths])
    page.wait_for_function(
        "document.querySelectorAll('#uploads tbody td div').length === 3", timeout=60_000
    )
    assert page.inner_text("#summary") == "2 accepted · 0 duplicate · 1 rejected"
    rejected = page.inner_text("#uploads tbody tr:nth-child(3)")
    assert "notes.txt" in rejected and "not a DICOM Part 10 file" in rejected
    assert Instance.objects.filter(site=site_a, series__modality="MR").count() == 2
    shots = os.environ.get("ARTISCAN_SCREENSHOT_DIR")
    if shots:
        page.screenshot(path=str(Path(shots) / "upload.png"))


def test_an_annotator_is_told_they_cannot_upload(page, asgi_server, annotator_a):
    page.goto(f"http://{asgi_server}/accounts/login/?next=/upload/")
    page.fill("#id_username", "annotator_a")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"http://{asgi_server}/upload/")
    assert "does not allow sending images" in page.inner_text("main")


def test_an_operator_cancels_an_upload_and_its_share_of_the_quota_is_freed(
    page, asgi_server, operator_a, site_a, tmp_path
):
    """Cancel stops a file before its next chunk; the server deletes its chunks and the page
    says "cancelled". Chunks go slowly here (each held half a second on the way), so the
    button is pressed while the file is still being sent."""
    import time

    from backend.ingest.models import Upload

    big = tmp_path / "big.zip"
    big.write_bytes(os.urandom(40 * 2**20))  # five 8 MiB chunks

    def slowly(route):
        time.sleep(0.5)
        route.continue_()

    page.route("**/api/uploads/*/chunk/**", slowly)
    page.goto(f"http://{asgi_server}/accounts/login/?next=/upload/")
    page.fill("#id_username", "operator_a")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"http://{asgi_server}/upload/")

    result = "document.querySelector('#uploads tbody td:nth-child(3)')?.textContent"
    page.set_input_files("#files", [str(big)])
    page.wait_for_function(f"{result}.startsWith('sending')", timeout=30_000)
    page.click("#uploads button.cancel")
    page.wait_for_function(f"{result} === 'cancelled'", timeout=30_000)
    assert page.inner_text("#summary").endswith("· 1 cancelled")
    assert not page.is_visible("#uploads button.cancel")
    upload = Upload.objects.get(user=operator_a.user)
    assert (upload.status, upload.error) == ("failed", "cancelled by the sender")
    assert 0 < upload.received < upload.size
