"""In Chromium: sign in, see the site's worklist, filter, search, sort and page it, and watch it
update from a live event."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from backend.realtime.services import event_publish
from backend.review.models import SeriesReview
from backend.scoring.models import Finding, ModelVersion, ScoringRun
from backend.studies.models import Series
from tests.conftest import PASSWORD
from tests.factories import InstanceFactory, SeriesFactory, StudyFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


def _sign_in(page, server: str, username: str) -> None:
    page.goto(f"http://{server}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"http://{server}/")


def _score(series, suitability: float, nondiagnostic: bool, artifact: str | None = None) -> None:
    model, _ = ModelVersion.objects.get_or_create(
        sha256="d" * 64, defaults={"name": "m", "version": "1", "weights_key": "-"}
    )
    run = ScoringRun.objects.create(
        series=series, site=series.site, model_version=model, status="done",
        suitability=suitability, nondiagnostic=nondiagnostic,
    )  # fmt: skip
    if artifact:
        Finding.objects.create(
            run=run, instance=InstanceFactory(series=series), site=series.site,
            artifact_type=artifact, area_px=100, area_fraction=0.1, confidence=0.9,
        )  # fmt: skip
    Series.objects.filter(pk=series.pk).update(
        current_run=run, status="scored", suitability=suitability
    )


def _rows(page) -> list[str]:
    return page.locator("#worklist tbody tr[data-series-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.seriesId)"
    )


def _wait_rows(page, expected: list[str]) -> None:
    page.wait_for_function(
        "ids => JSON.stringify([...document.querySelectorAll('#worklist tbody tr[data-series-id]')]"
        ".map(r => r.dataset.seriesId)) === JSON.stringify(ids)",
        arg=expected,
        timeout=10_000,
    )


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

    _score(mine, 0.42, True, "motion")
    # From another thread, as a worker would: this thread runs Playwright's event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(
            event_publish, site_id=site_a.pk, kind="series.scored", data={"series_id": str(mine.pk)}
        ).result()
    page.wait_for_selector("#worklist .badge[data-index='42']", timeout=10_000)
    text = rows.first.inner_text()
    assert "scored" in text and "motion" in text and "not reviewed" in text
    colour = page.eval_on_selector("#worklist .badge", "b => getComputedStyle(b).backgroundColor")
    red, green, _ = (int(v) for v in colour[colour.index("(") + 1 : -1].split(",")[:3])
    assert red > green  # 42/100 is in the red-amber band


def test_filters_search_sorting_and_paging(page, asgi_server, radiologist_a, site_a):
    bad = SeriesFactory(study=StudyFactory(site=site_a), description="T2 FLAIR AX")
    _score(bad, 0.2, True, "ghosting")
    good = SeriesFactory(study=StudyFactory(site=site_a), description="T1 MPRAGE")
    _score(good, 0.95, False)
    reviewed = SeriesFactory(study=StudyFactory(site=site_a), description="DWI")
    _score(reviewed, 0.6, True)
    SeriesReview.objects.create(
        series=reviewed, site=site_a, user=radiologist_a.user, verdict="diagnostic"
    )
    filler = [
        SeriesFactory(study=StudyFactory(site=site_a), description=f"LOCALIZER {n}")
        for n in range(25)
    ]
    _sign_in(page, asgi_server, "rad_a")
    page.wait_for_selector("#worklist tbody tr[data-series-id]", timeout=10_000)
    assert len(_rows(page)) == 25
    assert page.inner_text("#page-label") == "1–25 of 28"
    page.click("#next")
    page.wait_for_function("document.querySelector('#page-label').textContent === '26–28 of 28'")
    assert len(_rows(page)) == 3
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("document.querySelector('#page-label').textContent.startsWith('1–25')")

    page.fill("#f-q", "flair")
    _wait_rows(page, [str(bad.pk)])
    page.fill("#f-q", "")
    page.check("#f-nondiagnostic")
    _wait_rows(page, [str(bad.pk)])  # the reviewer said "diagnostic" for the DWI
    page.uncheck("#f-nondiagnostic")
    page.check("#f-unreviewed")
    page.wait_for_function("document.querySelector('#page-label').textContent.endsWith('of 27')")
    assert str(reviewed.pk) not in _rows(page)
    page.uncheck("#f-unreviewed")

    page.click("th[data-sort=suitability]")
    page.wait_for_function(
        f"document.querySelector('#worklist tbody tr').dataset.seriesId === '{bad.pk}'"
    )
    assert _rows(page)[:3] == [str(bad.pk), str(reviewed.pk), str(good.pk)]
    assert page.get_attribute("th[data-sort=suitability]", "aria-sort") == "ascending"
    page.click("th[data-sort=suitability]")
    page.wait_for_function(
        f"document.querySelector('#worklist tbody tr').dataset.seriesId === '{good.pk}'"
    )
    # The filters live in the URL: a reload keeps them.
    page.check("#f-nondiagnostic")
    _wait_rows(page, [str(bad.pk)])
    page.reload()
    _wait_rows(page, [str(bad.pk)])
    assert page.is_checked("#f-nondiagnostic")
    assert filler  # the 25 localizers made the second page


def test_a_wrong_password_shows_an_error_on_the_login_page(page, asgi_server, radiologist_a):
    page.goto(f"http://{asgi_server}/accounts/login/")
    page.fill("#id_username", "rad_a")
    page.fill("#id_password", "not the password")
    page.click("button[type=submit]")
    assert page.locator("p.error").inner_text() == "Wrong username or password."
