"""The jump test: it fires on a synthetic jump and not on noise of the same variance."""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail

from backend.dashboards.models import Alert, AlertSettings
from backend.dashboards.services import alert_notify, rollups_refresh
from backend.dashboards.stats import jump_test
from tests.dashboards.factories import BASE_WEEK

# Eight trailing weeks whose spike rate scatters around 10 % more than a binomial would
# (5, 1, 6, 2, 7, 1, 5, 3 of 40): the baseline's own variance.
TRAILING = [(5, 40), (1, 40), (6, 40), (2, 40), (7, 40), (1, 40), (5, 40), (3, 40)]


def test_a_week_that_moves_no_more_than_its_trailing_weeks_is_not_a_jump():
    # 7 of 40 is the highest trailing week: noise of the same variance.
    result = jump_test(7, 40, TRAILING)
    assert result is not None
    assert result.dispersion > 1  # the trailing weeks are over-dispersed, and the test knows
    assert result.p_value > 0.01


def test_a_tripled_rate_is_a_jump():
    result = jump_test(16, 40, TRAILING)
    assert result is not None
    assert result.p_value < 1e-4


def test_too_little_history_is_not_tested():
    assert jump_test(10, 40, TRAILING[:3]) is None


def _week(site, scanner, make_scored, week: int, spikes: int, total: int = 40) -> None:
    for i in range(total):
        make_scored(
            site=site, scanner=scanner, week=week, instances=1,
            artifacts=("spike",) if i < spikes else (), minute=i,
        )  # fmt: skip


@pytest.mark.django_db
def test_the_refresh_raises_an_alert_on_the_jumping_scanner_only(site_a, make_scanner, make_scored):
    jumping, steady = make_scanner(site_a, "MR-1"), make_scanner(site_a, "MR-2")
    for week, (spikes, total) in enumerate(TRAILING):
        _week(site_a, jumping, make_scored, week, spikes, total)
        _week(site_a, steady, make_scored, week, spikes, total)
    _week(site_a, jumping, make_scored, 8, spikes=16)  # the jump
    _week(site_a, steady, make_scored, 8, spikes=7)  # noise of the same variance
    result = rollups_refresh()
    alerts = list(Alert.objects.all())
    assert [(a.scanner_id, a.metric, a.week) for a in alerts] == [
        (jumping.pk, "spike", BASE_WEEK + dt.timedelta(weeks=8))
    ]
    assert result.alerts == alerts
    alert = alerts[0]
    assert (alert.count, alert.total, alert.baseline_count, alert.baseline_total) == (
        16, 40, 30, 320,
    )  # fmt: skip
    assert alert.p_value < alert.threshold
    rollups_refresh(full=True)  # a rebuild does not raise it twice
    assert Alert.objects.count() == 1


@pytest.mark.django_db
def test_an_alert_a_recount_takes_away_is_withdrawn(
    site_a, make_scanner, make_scored, api, radiologist_a, admin_a
):
    """The spike jump of week 8 was the model's: a radiologist rejects ten of its sixteen
    spike findings. The next refresh recounts the week (6 of 40, noise) and withdraws the
    open alert with the new count; it leaves the open list, stays in the full one."""
    from backend.scoring.models import Finding

    jumping = make_scanner(site_a, "MR-1")
    for week, (spikes, total) in enumerate(TRAILING):
        _week(site_a, jumping, make_scored, week, spikes, total)
    _week(site_a, jumping, make_scored, 8, spikes=16)
    rollups_refresh()
    (alert,) = Alert.objects.all()
    assert alert.withdrawn_at is None and alert.count == 16
    week8 = Finding.objects.filter(
        artifact_type="spike", run__series__received_at__date__gte=alert.week
    ).order_by("id")
    client = api.as_(radiologist_a)
    for finding in week8[:10]:
        answer = client.post(f"/api/findings/{finding.pk}/reviews/", {"action": "reject"})
        assert answer.status_code == 201, answer.content
    rollups_refresh()
    alert.refresh_from_db()
    assert alert.withdrawn_at is not None and alert.acknowledged_at is None
    assert (alert.count, alert.total) == (6, 40)
    listed = api.as_(admin_a).get("/api/dashboards/alerts/", {"open": "true"}).json()
    assert listed["rows"] == []
    everything = api.as_(admin_a).get("/api/dashboards/alerts/").json()["rows"]
    assert [a["id"] for a in everything] == [alert.pk] and everything[0]["withdrawn_at"]


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, object]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook():
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Hook.received
    server.shutdown()


@pytest.mark.django_db
def test_an_alert_goes_out_by_mail_and_webhook_without_patient_data(
    site_a, make_scanner, webhook, settings
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    url, received = webhook
    AlertSettings.objects.create(
        site=site_a, emails="qa@example.org, lead@example.org", webhook_url=url
    )
    scanner = make_scanner(site_a, "MR-1")
    alert = Alert.objects.create(
        site=site_a, scanner=scanner, metric="spike", week=BASE_WEEK, count=16, total=40,
        baseline_count=30, baseline_total=320, baseline_weeks=8, dispersion=1.5,
        p_value=1e-6, threshold=1e-3,
    )  # fmt: skip
    alert_notify(alert_id=alert.pk)
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["qa@example.org", "lead@example.org"]
    assert "spike" in mail.outbox[0].subject and "MR-1" in mail.outbox[0].subject
    # MISSION: a spike-rate jump points at hardware; the alert says so.
    assert mail.outbox[0].subject.endswith(": check the scanner's hardware")
    assert "Likely cause: Spikes come from the scanner's hardware" in mail.outbox[0].body
    assert len(received) == 1
    payload = received[0]
    assert payload["metric"] == "spike" and payload["count"] == 16 and payload["site"] == "site-a"
    assert set(payload) == {
        "kind", "id", "site", "scanner", "metric", "week", "count", "total", "rate",
        "baseline_rate", "baseline_weeks", "p_value", "threshold", "likely_cause", "dashboard",
    }  # fmt: skip
    assert "service" in str(payload["likely_cause"])
    alert.refresh_from_db()
    assert alert.notified_at is not None
    alert_notify(alert_id=alert.pk)  # once only
    assert len(mail.outbox) == 1 and len(received) == 1
