"""In Chromium: sign in, see the site's worklist, and watch it update from a live event."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from backend.realtime.services import event_publish
from backend.studies.models import Series
from tests.conftest import PASSWORD
from tests.factories import SeriesFactory, StudyFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


def _sign_in(page, server: str, username: str) -> None:
    page.goto(f"http://{server}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"http://{server}/")


def test_a_radiologist_signs_in_and_sees_only_the_sites_series_update_live(
    page, asgi_server, radiologist_a, radiologist_b, site_a, site_b
):
    mine = SeriesFactory(study=StudyFactory(site=site_a), description="T2 FLAIR AX")
    SeriesFactory(study=StudyFactory(site=site_b), description="OTHER SITE SERIES")
    _sign_in(page, asgi_server, "rad_a")

    page.wait_for_selector("#worklist tbody tr[data-series-id]", timeout=10_000)
    rows = page.locator("#worklist tbody tr")
    assert rows.count() == 1
    assert "T2 FLAIR AX" in rows.first.inner_text()
    assert "OTHER SITE SERIES" not in page.content()
    page.wait_for_selector("#live[data-state=open]", timeout=10_000)

    Series.objects.filter(pk=mine.pk).update(status="scored", suitability=0.42)
    # From another thread, as a worker would: this thread runs Playwright's event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(
            event_publish, site_id=site_a.pk, kind="series.scored", data={"series_id": str(mine.pk)}
        ).result()
    page.wait_for_selector("#worklist td.suit-bad", timeout=10_000)
    assert "0.42" in rows.first.inner_text()
    assert "scored" in rows.first.inner_text()

    shots = os.environ.get("ARTISCAN_SCREENSHOT_DIR")
    if shots:  # `make screenshots` refreshes the README's picture from this very page
        page.screenshot(path=str(Path(shots) / "worklist.png"))


def test_a_wrong_password_shows_an_error_on_the_login_page(page, asgi_server, radiologist_a):
    page.goto(f"http://{asgi_server}/accounts/login/")
    page.fill("#id_username", "rad_a")
    page.fill("#id_password", "not the password")
    page.click("button[type=submit]")
    assert page.locator("p.error").inner_text() == "Wrong username or password."
