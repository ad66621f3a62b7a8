"""The dashboard APIs through HTTP: scoping by persona (aggregates included), CSV, PDF, drill-down,
acknowledging an alert, alert settings, and the audit rows each leaves."""

from __future__ import annotations

import csv
import io

import pytest
from django.utils import timezone

from backend.audit.models import AuditEvent
from backend.dashboards.models import Alert
from backend.dashboards.services import rollups_refresh
from tests.dashboards.factories import BASE_WEEK

pytestmark = pytest.mark.django_db

RANGE = {"week_from": BASE_WEEK.isoformat(), "week_to": "2026-03-16"}


@pytest.fixture
def two_sites(site_a, site_b, make_scanner, make_scored):
    a1, b1 = make_scanner(site_a, "A-MR1"), make_scanner(site_b, "B-MR1")
    for i in range(6):
        make_scored(
            site=site_a,
            scanner=a1,
            week=0,
            nondiagnostic=i < 2,
            artifacts=("motion",) if i < 3 else (),
        )
    for i in range(4):
        make_scored(
            site=site_b, scanner=b1, week=1, protocol="b_secret_proto", nondiagnostic=i < 1,
            artifacts=("spike",),
        )  # fmt: skip
    rollups_refresh()
    return a1, b1


def _sum_series(rows):
    return sum(r["series"] for r in rows)


def test_site_b_admin_sees_nothing_of_site_a_counts_included(api, two_sites, admin_a, admin_b):
    for name in ("summary", "trend", "heatmap", "worst"):
        a = api.as_(admin_a).get(f"/api/dashboards/{name}/", {**RANGE, "min_series": 1}).json()
        b = api.as_(admin_b).get(f"/api/dashboards/{name}/", {**RANGE, "min_series": 1}).json()
        assert _sum_series(a["rows"]) == 6, name
        assert _sum_series(b["rows"]) == 4, name
        assert "b_secret_proto" not in str(a) and "B-MR1" not in str(a)
        assert "A-MR1" not in str(b)
    # Asking for the other site by id gives the same as asking for nothing.
    stolen = api.as_(admin_b).get(
        "/api/dashboards/summary/", {**RANGE, "site": two_sites[0].site_id}
    )
    assert stolen.status_code == 200 and stolen.json()["rows"] == []
    trend = api.as_(admin_b).get("/api/dashboards/trend/", {**RANGE, "site": two_sites[0].site_id})
    assert all(r["series"] == 0 for r in trend.json()["rows"])


def test_the_superuser_sees_both_sites_and_a_radiologist_sees_none(
    api, two_sites, superuser, radiologist_a
):
    rows = api.as_(superuser).get("/api/dashboards/summary/", RANGE).json()["rows"]
    assert _sum_series(rows) == 10
    assert api.as_(radiologist_a).get("/api/dashboards/summary/", RANGE).json()["rows"] == []
    assert api.as_(None).get("/api/dashboards/summary/", RANGE).status_code in (401, 403)


def test_every_table_exports_as_csv_with_formulas_neutralised(
    api, two_sites, admin_a, make_scored, site_a
):
    make_scored(
        site=site_a, scanner=two_sites[0], week=0, protocol="=HYPERLINK(1)",
        finished_at=timezone.now(),
    )  # fmt: skip
    rollups_refresh()
    for name in ("summary", "trend", "heatmap", "worst", "alerts", "series"):
        response = api.as_(admin_a).get(f"/api/dashboards/{name}/", {**RANGE, "format": "csv"})
        assert response.status_code == 200, name
        assert response["Content-Type"].startswith("text/csv")
        assert "attachment" in response["Content-Disposition"]
        rows = list(csv.reader(io.StringIO(response.content.decode())))
        assert rows and rows[0], name
    summary = api.as_(admin_a).get("/api/dashboards/summary/", {**RANGE, "format": "csv"})
    table = list(csv.DictReader(io.StringIO(summary.content.decode())))
    assert {r["protocol"] for r in table} == {"t2_tse_ax", "'=HYPERLINK(1)"}
    assert sum(int(r["series"]) for r in table) == 7
    assert AuditEvent.objects.filter(
        object_type="dashboard", action="export", site_id=site_a.pk
    ).exists()


def test_the_drilldown_keeps_the_model_results_of_series_the_caller_reads_blind(
    api, two_sites, admin_a, site_a
):
    """A site's QA administrator who is also a reader, reading one of the site's series blind:
    the drill-down lists it without its index or flag, and does not find it by a model
    result (motion, non-diagnostic) — which would tell them what the model said."""
    from annotation.models import Assignment, Campaign
    from backend.accounts.models import Membership, Role
    from backend.scoring.models import Finding

    Membership.objects.create(user=admin_a.user, site=site_a, role=Role.ANNOTATOR)
    flagged = Finding.objects.filter(artifact_type="motion", run__series__site=site_a)
    series = flagged.filter(run__nondiagnostic=True).first().run.series
    # (The dashboard fixture's series have no stored images, which a campaign's query needs:
    # the campaign's rows are made here as campaign_create makes them.)
    campaign = Campaign.objects.create(
        site=site_a, name="blind", blinded=True, readers_per_image=1, created_by=admin_a.user
    )
    Assignment.objects.create(
        campaign=campaign, series=series, site=site_a, reader=admin_a.user, position=0
    )
    client = api.as_(admin_a)
    rows = {r["id"]: r for r in client.get("/api/dashboards/series/", RANGE).json()["rows"]}
    assert rows[str(series.pk)]["suitability"] is None
    assert rows[str(series.pk)]["nondiagnostic"] is None
    assert sum(r["nondiagnostic"] is not None for r in rows.values()) == 5
    for metric, seen in (("motion", 2), ("nondiagnostic", 1)):
        body = client.get("/api/dashboards/series/", {**RANGE, "metric": metric}).json()
        assert body["count"] == seen, metric
        assert str(series.pk) not in [r["id"] for r in body["rows"]]


def test_the_drilldown_lists_the_series_behind_a_cell_with_viewer_links(
    api, two_sites, admin_a, admin_b
):
    a1, _ = two_sites
    body = (
        api.as_(admin_a)
        .get(
            "/api/dashboards/series/",
            {**RANGE, "scanner": a1.pk, "week": BASE_WEEK.isoformat(), "metric": "motion"},
        )
        .json()
    )
    assert body["count"] == 3
    assert all(r["viewer_url"] == f"/series/{r['id']}/" for r in body["rows"])
    nd = (
        api.as_(admin_a).get("/api/dashboards/series/", {**RANGE, "metric": "nondiagnostic"}).json()
    )
    assert nd["count"] == 2
    assert (
        api.as_(admin_b).get("/api/dashboards/series/", {**RANGE, "scanner": a1.pk}).json()["count"]
        == 0
    )
    assert (
        AuditEvent.objects.filter(object_type="series", action="list", username="admin_a").count()
        >= 1
    )


def test_a_site_admin_acknowledges_their_alert_and_it_is_recorded_and_audited(
    api, site_a, admin_a, admin_b
):
    alert = Alert.objects.create(
        site=site_a, metric="spike", week=BASE_WEEK, count=9, total=30, baseline_count=3,
        baseline_total=240, baseline_weeks=8, dispersion=1.0, p_value=1e-7, threshold=1e-3,
    )  # fmt: skip
    assert (
        api.as_(admin_b).post(f"/api/dashboards/alerts/{alert.pk}/acknowledge/").status_code == 404
    )
    assert api.as_(admin_b).get("/api/dashboards/alerts/").json()["rows"] == []
    assert AuditEvent.objects.filter(
        object_type="quality_alert", outcome="denied", username="admin_b"
    ).exists()
    response = api.as_(admin_a).post(f"/api/dashboards/alerts/{alert.pk}/acknowledge/")
    assert response.status_code == 200
    assert response.json()["acknowledged_by"] == "admin_a"
    alert.refresh_from_db()
    assert alert.acknowledged_by == admin_a.user and alert.acknowledged_at is not None
    assert AuditEvent.objects.filter(
        object_type="quality_alert", object_id=str(alert.pk), action="annotate", username="admin_a"
    ).exists()
    rows = api.as_(admin_a).get("/api/dashboards/alerts/", {"open": "true"}).json()["rows"]
    assert rows == []


def test_alert_settings_belong_to_the_sites_admins(api, site_a, admin_a, admin_b):
    url = f"/api/dashboards/sites/{site_a.pk}/alert-settings/"
    assert api.as_(admin_b).get(url).status_code == 404
    assert api.as_(admin_b).put(url, {"emails": "x@example.org"}, format="json").status_code == 404
    bad = api.as_(admin_a).put(url, {"webhook_url": "file:///etc/passwd"}, format="json")
    assert bad.status_code == 400
    ok = api.as_(admin_a).put(
        url,
        {
            "emails": "qa@example.org\nboss@example.org",
            "webhook_url": "https://hooks.example.org/x",
        },
        format="json",
    )
    assert ok.status_code == 200
    assert api.as_(admin_a).get(url).json()["emails"] == "qa@example.org, boss@example.org"


def test_the_monthly_report_is_a_pdf_of_the_callers_site_only(
    api, two_sites, admin_a, admin_b, site_a
):
    response = api.as_(admin_a).get(
        "/api/dashboards/report.pdf", {"site": site_a.pk, "month": "2026-03"}
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    assert len(response.content) > 5000
    denied = api.as_(admin_b).get(
        "/api/dashboards/report.pdf", {"site": site_a.pk, "month": "2026-03"}
    )
    assert denied.status_code == 404


def test_the_dashboard_page_lists_only_the_callers_qa_sites(
    client, site_a, site_b, admin_a, radiologist_a
):
    from tests.conftest import PASSWORD

    client.login(username="admin_a", password=PASSWORD)
    page = client.get("/dashboards/").content.decode()
    assert "Site A" in page and "Site B" not in page and "app/dashboard.js" in page
    client.login(username="rad_a", password=PASSWORD)
    assert "not one at any site" in client.get("/dashboards/").content.decode()


def test_a_sites_admin_sees_what_was_refused_at_its_door_and_no_more(
    api, site_a, site_b, admin_a, admin_b, radiologist_a, scratch_store
):
    """Refusals by site, way in and reason, counted (the quarantine's rows: no file, no header
    value); another site's stay out, asked for by id or not; the table exports as CSV."""
    from backend.ingest.services import MIXED_PATIENTS, series_ingest
    from tests.deid.builders import mr_dataset, to_bytes

    other = mr_dataset(2)
    other.PatientID = "SOMEONE-ELSE"
    series_ingest(site=site_a, files=[to_bytes(mr_dataset(1)), to_bytes(other)], source="stow")
    series_ingest(site=site_a, files=[b"junk", b"more junk"], source="upload")
    series_ingest(site=site_b, files=[b"b's junk"], source="cstore")
    rows = api.as_(admin_a).get("/api/dashboards/refused/").json()["rows"]
    got = sorted((r["site"], r["source"], r["reason"], r["files"]) for r in rows)
    assert got == sorted(
        [
            (site_a.name, "stow", MIXED_PATIENTS, 1),
            (site_a.name, "upload", "not a DICOM Part 10 file (no DICM marker)", 2),
        ]
    ), got
    b_rows = api.as_(admin_b).get("/api/dashboards/refused/").json()["rows"]
    assert [(r["site"], r["source"], r["files"]) for r in b_rows] == [(site_b.name, "cstore", 1)]
    stolen = api.as_(admin_b).get("/api/dashboards/refused/", {"site": site_a.pk})
    assert stolen.status_code == 200 and stolen.json()["rows"] == []
    assert api.as_(radiologist_a).get("/api/dashboards/refused/").json()["rows"] == []
    exported = api.as_(admin_a).get("/api/dashboards/refused/", {"format": "csv"})
    table = list(csv.DictReader(io.StringIO(exported.content.decode())))
    assert sum(int(r["files"]) for r in table) == 3


def test_a_series_without_protocol_or_description_is_a_row_that_drills_down(
    api, admin_a, site_a, make_scanner, make_scored
):
    """Its protocol is "" in the summary; asking for protocol "" lists it (it was a 400)."""
    scanner = make_scanner(site_a, "A-MR9")
    blank = make_scored(site=site_a, scanner=scanner, week=0, protocol="", description="")
    make_scored(site=site_a, scanner=scanner, week=0)
    rollups_refresh()
    client = api.as_(admin_a)
    rows = client.get("/api/dashboards/summary/", RANGE).json()["rows"]
    assert sorted(r["protocol"] for r in rows) == ["", "t2_tse_ax"]
    body = client.get("/api/dashboards/series/", {**RANGE, "protocol": ""})
    assert body.status_code == 200, body.content
    assert [r["id"] for r in body.json()["rows"]] == [str(blank.pk)]
