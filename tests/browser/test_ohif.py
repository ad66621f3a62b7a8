"""In Chromium: OHIF's own prebuilt viewer (npm package @ohif/app, installed by
deploy/install-ohif.sh) opens a scored series of ours over our /dicomweb/, draws the image and
lists our DICOM SEG series; signed out, /ohif/ sends to the login page."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.dicomweb.ohif import ohif_dist
from backend.scoring.seg import seg_store
from tests.browser.test_viewer_page import _sign_in
from tests.conftest import _free_port, _listening_process, _server_env
from tests.review.helpers import scored_series

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]

# The largest viewport canvas as a sum of its red channel and its count of non-black pixels.
CANVAS_DRAWN = """() => {
  const canvases = [...document.querySelectorAll('.cornerstone-canvas, canvas')]
    .filter(c => c.width > 64 && c.height > 64);
  if (!canvases.length) return {n: 0, lit: 0};
  const source = canvases.sort((a, b) => b.width * b.height - a.width * a.height)[0];
  const copy = document.createElement('canvas');
  copy.width = source.width; copy.height = source.height;
  const ctx = copy.getContext('2d');
  ctx.drawImage(source, 0, 0);
  const data = ctx.getImageData(0, 0, copy.width, copy.height).data;
  let lit = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 30) lit++;
  return {n: data.length / 4, lit};
}"""


@pytest.fixture(scope="module")
def ohif_server(asgi_server, tmp_path_factory) -> Iterator[str]:
    """A daphne of its own with the opt-in /ohif/ route on (``asgi_server`` first: it collects
    the static files that the login page needs)."""
    from django.conf import settings

    if not (ohif_dist() / "index.html").is_file():
        pytest.fail(f"OHIF is not installed in {ohif_dist()}: run bash deploy/install-ohif.sh")
    port = _free_port()
    env = _server_env(settings.DATABASES["default"]["NAME"])
    env["ARTISCAN_OHIF"] = "true"
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    command.append("backend.config.asgi:application")
    log = tmp_path_factory.mktemp("ohif") / "daphne.log"
    with _listening_process(command, env=env, port=port, log=log, what="daphne with OHIF"):
        yield f"127.0.0.1:{port}"


def test_without_the_opt_in_there_is_no_ohif_route(asgi_server):
    import requests

    assert requests.get(f"http://{asgi_server}/ohif/", timeout=10).status_code == 404


def test_signed_out_the_viewer_sends_to_the_login_page(page, ohif_server):
    page.goto(f"http://{ohif_server}/ohif/viewer?StudyInstanceUIDs=1.2.3")
    assert "/accounts/login/" in page.url


def test_ohif_opens_our_scored_series_draws_it_and_lists_the_seg(
    page, ohif_server, radiologist_a, site_a
):
    series = scored_series(site_a, slices=5, rows=128, columns=128, thread=True)
    assert _in_thread(lambda: seg_store(series.current_run))  # one SEG: classic slices
    study_uid = series.study.study_uid
    failed: list[str] = []
    page.on(
        "response",
        lambda r: (
            failed.append(f"{r.status} {r.url}")
            if "/dicomweb/" in r.url and r.status >= 400
            else None
        ),
    )
    _sign_in(page, ohif_server, "rad_a", f"/ohif/viewer?StudyInstanceUIDs={study_uid}")
    page.wait_for_url(f"**/ohif/viewer?StudyInstanceUIDs={study_uid}*", timeout=30_000)

    # The viewport draws our image: a canvas with many lit pixels.
    page.wait_for_function(
        f"(() => {{ const r = ({CANVAS_DRAWN})(); return r.n > 0 && r.lit > r.n * 0.02; }})()",
        timeout=90_000,
    )
    # The study browser lists both series of the study: our MR and our DICOM SEG (by the SEG's
    # series description, which only our scoring writes).
    page.wait_for_selector("text=ArtiScan artifacts", timeout=60_000)
    browser_text = page.inner_text("body")
    assert "MR\\SEG" in browser_text  # the study's modalities, from our QIDO-RS
    assert "T2 TSE AX" in browser_text  # the MR series, by its description
    assert not failed, failed
    shots = os.environ.get("ARTISCAN_SCREENSHOT_DIR")
    if shots:
        page.screenshot(path=str(Path(shots) / "ohif.png"))


def _in_thread(fn):  # type: ignore[no-untyped-def]
    """ORM work outside Playwright's event-loop thread."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()
