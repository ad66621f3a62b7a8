"""In Chromium: a site QA administrator opens the dashboards, sees the charts drawn (trend with
its confidence band, ranked bars, heat map), acknowledges the alert raised by an injected spike
jump, and drills down from a heat-map cell to the series behind it and on to the viewer. Site B's
numbers never appear."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from backend.dashboards.models import Alert, AlertSettings
from backend.dashboards.services import rollups_refresh
from backend.scoring.models import ModelVersion
from backend.studies.models import Scanner
from tests.conftest import PASSWORD
from tests.dashboards.factories import scored_series_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]

# Non-blank pixels of a canvas: the chart really drew something.
INKED = """(selector) => {
  const c = document.querySelector(selector);
  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let inked = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) inked++;
  return inked;
}"""

SPIKES = [1, 0, 2, 1, 0, 1, 2, 1]  # of 12 series a week, the eight trailing weeks
PER_WEEK = 12


def _history(site, scanners, model_version, *, jump_on=None):
    """Nine weeks ending this week; ``jump_on`` gets 9 of 12 spiked series this week."""
    this_monday = timezone.now().date() - dt.timedelta(days=timezone.now().weekday())
    for back in range(8, -1, -1):
        monday = this_monday - dt.timedelta(weeks=back)
        arrived = dt.datetime(monday.year, monday.month, monday.day, 9, tzinfo=dt.UTC)
        for scanner in scanners:
            spikes = 9 if (back == 0 and scanner == jump_on) else SPIKES[(8 - back) % 8]
            for i in range(PER_WEEK):
                scored_series_create(
                    model_version=model_version, site=site, scanner=scanner, arrived=arrived,
                    minute=i, instances=1, suitability=0.3 if i < 2 else 0.9,
                    nondiagnostic=i < 2, description=f"{scanner.label} T2 {i}",
                    protocol="t2_tse_ax" if i % 2 else "t1_mprage_sag",
                    family="SE" if i % 2 else "GRE",
                    artifacts=("spike",) if i < spikes else (("motion",) if i == 11 else ()),
                )  # fmt: skip


def _sign_in(page, server: str, username: str) -> None:
    page.goto(f"http://{server}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"http://{server}/")


def test_a_site_admin_sees_the_charts_acknowledges_the_alert_and_drills_down_to_the_viewer(
    page, asgi_server, admin_a, admin_b, site_a, site_b
):
    model_version = ModelVersion.objects.create(
        name="test", version="1", sha256="e" * 64, weights_key="w", classes=[]
    )
    mr1 = Scanner.objects.create(site=site_a, pseudonym="a1", label="MR-1")
    mr2 = Scanner.objects.create(site=site_a, pseudonym="a2", label="MR-2")
    other = Scanner.objects.create(site=site_b, pseudonym="b1", label="OTHER-SITE-MR")
    _history(site_a, [mr1, mr2], model_version, jump_on=mr1)
    _history(site_b, [other], model_version)
    rollups_refresh()
    assert list(Alert.objects.values_list("scanner__label", "metric")) == [("MR-1", "spike")]

    _sign_in(page, asgi_server, "admin_a")
    page.goto(f"http://{asgi_server}/dashboards/")
    page.wait_for_selector("#dashboard[data-state=ready]", timeout=20_000)
    for canvas in ("#trend-chart", "#worst-protocols", "#worst-scanners"):
        assert page.get_attribute(canvas, "data-drawn") == "true", canvas
        assert int(page.get_attribute(canvas, "data-points")) > 0, canvas
        assert page.evaluate(INKED, canvas) > 500, canvas
    heat_rows = page.locator("#heatmap tbody tr")
    assert heat_rows.count() == 2
    assert "OTHER-SITE-MR" not in page.content()
    summary_series = sum(
        int(t) for t in page.locator("#summary tbody tr td:nth-child(5)").all_inner_texts()
    )
    assert summary_series == 2 * 9 * PER_WEEK  # site A's only: counts included

    alert = page.locator("#alerts li.open")
    assert alert.count() == 1
    assert "spike on MR-1" in alert.inner_text()
    assert "hardware" in alert.locator(".cause").inner_text()  # a spike jump points at hardware
    # The spike rate: its trend ends in the jump, outside the trailing weeks' band.
    page.select_option("#f-metric", "spike")
    page.wait_for_selector("#dashboard[data-state=ready]", timeout=20_000)
    worst = json.loads(page.get_attribute("#worst-scanners", "data-labels"))
    assert worst[0].startswith("MR-1")  # ranked first on spikes
    alert.locator("button").click()
    page.wait_for_selector("#alerts li.acked", timeout=10_000)
    assert "acknowledged by admin_a" in page.locator("#alerts li.acked").inner_text()
    acked = Alert.objects.get()
    assert acked.acknowledged_by_id == admin_a.user.pk and acked.acknowledged_at is not None

    # Where the alerts go: saved for the site, then read back by the API.
    page.click("#alert-settings summary")
    page.fill("#s-emails", "qa@site-a.example, physicist@site-a.example")
    page.fill("#s-webhook", "https://hooks.site-a.example/artiscan")
    page.click("#alert-settings-form button[type=submit]")
    page.wait_for_selector("#s-status[data-state=saved]", timeout=10_000)
    config = AlertSettings.objects.get(site=site_a)
    assert config.email_list == ["qa@site-a.example", "physicist@site-a.example"]
    assert config.webhook_url == "https://hooks.site-a.example/artiscan"

    # Drill down: the spike cell of MR-1 lists its spiked series; one opens in the viewer.
    page.click(f"#heatmap td.cell[data-metric=spike][data-scanner='{mr1.pk}']")
    page.wait_for_selector("#drilldown-table tbody tr[data-series-id]", timeout=10_000)
    rows = page.locator("#drilldown-table tbody tr[data-series-id]")
    expected = sum(SPIKES[(8 - back) % 8] for back in range(8, 0, -1)) + 9
    assert rows.count() == expected
    assert all("MR-1" in t for t in rows.all_inner_texts())
    series_id = rows.first.get_attribute("data-series-id")
    rows.first.locator("a").click()
    page.wait_for_url(f"http://{asgi_server}/series/{series_id}/", timeout=10_000)
    assert page.get_attribute("#viewer", "data-series-id") == series_id


def test_site_b_admin_sees_nothing_of_site_a_on_the_page(
    page, asgi_server, admin_a, admin_b, site_a
):
    model_version = ModelVersion.objects.create(
        name="test", version="1", sha256="f" * 64, weights_key="w", classes=[]
    )
    mr1 = Scanner.objects.create(site=site_a, pseudonym="a1", label="SITE-A-MR")
    _history(site_a, [mr1], model_version, jump_on=mr1)
    rollups_refresh()
    _sign_in(page, asgi_server, "admin_b")
    page.goto(f"http://{asgi_server}/dashboards/")
    page.wait_for_selector("#dashboard[data-state=ready]", timeout=20_000)
    assert "SITE-A-MR" not in page.content()
    assert page.locator("#heatmap tbody tr.empty").count() == 1
    assert page.locator("#alerts li.open").count() == 0


def test_a_site_admin_sees_and_acknowledges_an_access_alert(
    page, asgi_server, api, admin_a, radiologist_b, study_a, site_a, settings
):
    """Site B's radiologist asks for site A's study again and again (each answered 404 and
    audited as denied against site A): site A's administrator finds the burst on the page."""
    from backend.dashboards.access import access_alerts_evaluate

    settings.ARTISCAN_DENIED_BURST = 20
    client = api.as_(radiologist_b)
    for _ in range(20):
        assert client.get(f"/api/studies/{study_a.pk}/").status_code == 404
    (alert,) = access_alerts_evaluate()
    # A refusal at the door (the row as the quarantine keeps it; the page shows no file).
    from backend.ingest.models import QuarantinedFile

    QuarantinedFile.objects.create(
        site=site_a, source="cstore", reason="burned-in annotation", storage_key="q/1",
        size_bytes=10, sha256="0" * 64, expires_at=timezone.now() + dt.timedelta(days=30),
    )  # fmt: skip

    _sign_in(page, asgi_server, "admin_a")
    page.goto(f"http://{asgi_server}/dashboards/")
    page.wait_for_selector("#dashboard[data-state=ready]", timeout=20_000)
    item = page.locator(f"#access-alerts li.open[data-alert-id='{alert.pk}']")
    assert "rad_b was refused 20 times on Site A" in item.inner_text()
    item.locator("button", has_text="Acknowledge").click()
    page.wait_for_selector("#access-alerts li.acked", timeout=10_000)
    assert "acknowledged by admin_a" in page.locator("#access-alerts li.acked").inner_text()
    alert.refresh_from_db()
    assert alert.acknowledged_by == admin_a.user
    refused = page.locator("#refused tbody tr").first.inner_text()
    assert "C-STORE" in refused and "burned-in annotation" in refused
