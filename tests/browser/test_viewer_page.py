"""In Chromium: a radiologist opens a series from the worklist in the Cornerstone3D viewer, which
loads it over our DICOMweb; scrolling and window presets change what is drawn."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from backend.ingest.services import series_ingest
from backend.scoring.services import series_score
from backend.studies.models import Series
from tests.conftest import PASSWORD
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]

CANVAS_SUM = """() => {
  const source = document.querySelector('#viewport canvas');
  const copy = document.createElement('canvas');
  copy.width = source.width; copy.height = source.height;
  const ctx = copy.getContext('2d');
  ctx.drawImage(source, 0, 0);
  const data = ctx.getImageData(0, 0, copy.width, copy.height).data;
  let sum = 0;
  for (let i = 0; i < data.length; i += 4) sum += data[i];
  return sum;
}"""


def _ingest(site, files) -> None:
    # In another thread: this one runs Playwright's event loop, and ingest publishes events.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(series_ingest, site=site, files=files, source="upload").result()


def _sign_in(page, server: str, username: str, next_url: str) -> None:
    page.goto(f"http://{server}/accounts/login/?next={next_url}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def test_a_series_opens_scrolls_and_changes_window(page, asgi_server, radiologist_a, site_a):
    _ingest(site_a, [to_bytes(mr_dataset(i, rows=64, columns=64)) for i in range(1, 6)])
    series = Series.objects.get(site=site_a, modality="MR")
    with ThreadPoolExecutor(1) as pool:  # scored before the page opens (a worker may add more)
        pool.submit(series_score, series_id=series.pk).result()
    _sign_in(page, asgi_server, "rad_a", "/")
    page.wait_for_selector("#worklist tbody tr[data-series-id] a", timeout=10_000)
    page.click("#worklist tbody tr[data-series-id] a")
    page.wait_for_url(f"http://{asgi_server}/series/{series.pk}/")
    page.wait_for_selector("#viewer-status[data-state=ready]", timeout=30_000)
    assert page.get_attribute("#viewer", "data-slice") == "2"  # opens in the middle
    assert "3.0 T" in page.inner_text("#headers") and "130 Hz/px" in page.inner_text("#headers")
    page.wait_for_function(f"({CANVAS_SUM})() > 0", timeout=10_000)
    page.wait_for_selector("#viewer[data-scored='5']", timeout=10_000)
    assert page.locator("#strip .strip-cell").count() == 5
    assert "/100" in page.inner_text("#series-index")
    assert page.inner_text("#findings").startswith("Index ")
    drawn = page.evaluate(CANVAS_SUM)

    page.keyboard.press("ArrowDown")
    page.wait_for_function("document.querySelector('#viewer').dataset.slice === '3'")
    assert page.inner_text("#slice-label") == "4 / 5"

    page.select_option("#preset", "wide")
    page.wait_for_function(f"({CANVAS_SUM})() !== {drawn}", timeout=10_000)

    shots = os.environ.get("ARTISCAN_SCREENSHOT_DIR")
    if shots:
        page.screenshot(path=str(Path(shots) / "viewer.png"))


def test_another_sites_series_is_not_reachable_by_url(page, asgi_server, radiologist_b, site_a):
    _ingest(site_a, [to_bytes(mr_dataset(1))])
    series = Series.objects.get(site=site_a, modality="MR")
    _sign_in(page, asgi_server, "rad_b", f"/series/{series.pk}/")
    response = page.goto(f"http://{asgi_server}/series/{series.pk}/")
    assert response is not None and response.status == 404
