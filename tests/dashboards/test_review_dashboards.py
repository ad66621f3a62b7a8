"""Review findings on the dashboards: dates at the edges of the calendar are a 400 (never a 500,
never a twenty-century trend), and an alert whose webhook fails is not e-mailed again on every
retry or redelivery of its task."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail

from backend.dashboards import notify
from backend.dashboards.models import Alert, AlertSettings
from backend.dashboards.services import alert_notify
from tests.dashboards.factories import BASE_WEEK

pytestmark = pytest.mark.django_db

TABLES = ("summary", "trend", "worst", "heatmap", "series")


@pytest.mark.parametrize("name", TABLES)
@pytest.mark.parametrize(
    "params",
    [
        {"week_to": "9999-12-31"},  # the week after it is past the calendar
        {"week_from": "9999-12-20", "week_to": "9999-12-31"},
        {"week_to": "0001-01-10"},  # the default twelve weeks before it are before year 1
        {"week_from": "0001-01-01"},  # alone: two thousand years of weeks
        {"week_from": "1900-01-01"},  # alone: past the five-year limit
    ],
    ids=["to-9999", "both-9999", "to-0001", "from-0001", "from-1900"],
)
def test_it_rejects_dates_at_the_edge_of_the_calendar_with_a_400(api, admin_a, name, params):
    response = api.as_(admin_a).get(f"/api/dashboards/{name}/", params)
    assert response.status_code == 400, (name, params, response.content[:200])


def test_the_drilldown_rejects_an_offset_past_what_the_database_can_hold(api, admin_a):
    response = api.as_(admin_a).get("/api/dashboards/series/", {"offset": 10**30})
    assert response.status_code == 400


@pytest.mark.parametrize("month", ["0000-01", "0001-01", "9999-12"])
def test_the_monthly_report_rejects_months_at_the_edge_of_the_calendar(api, admin_a, site_a, month):
    response = api.as_(admin_a).get(
        "/api/dashboards/report.pdf", {"site": site_a.pk, "month": month}
    )
    assert response.status_code == 400


class _FailingOnceHook(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls += 1
        self.send_response(503 if type(self).calls == 1 else 204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky_webhook():
    server = HTTPServer(("127.0.0.1", 0), _FailingOnceHook)
    _FailingOnceHook.calls = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook?token=s3cr3t-token"
    server.shutdown()


def _alert(site, scanner):
    return Alert.objects.create(
        site=site, scanner=scanner, metric="spike", week=BASE_WEEK, count=16, total=40,
        baseline_count=30, baseline_total=320, baseline_weeks=8, dispersion=1.5,
        p_value=1e-6, threshold=1e-3,
    )  # fmt: skip


def test_a_retried_alert_is_mailed_once_when_only_its_webhook_failed(
    site_a, make_scanner, flaky_webhook, settings
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    AlertSettings.objects.create(site=site_a, emails="qa@example.org", webhook_url=flaky_webhook)
    alert = _alert(site_a, make_scanner(site_a, "MR-1"))
    with pytest.raises(notify.NotifyError):
        alert_notify(alert_id=alert.pk)  # mail goes, the webhook answers 503
    assert len(mail.outbox) == 1
    alert_notify(alert_id=alert.pk)  # the task's retry
    assert _FailingOnceHook.calls == 2
    assert len(mail.outbox) == 1  # not mailed twice
    alert.refresh_from_db()
    assert alert.notified_at is not None and alert.notify_error == ""


def test_a_webhook_failure_never_records_or_raises_the_webhook_secret(
    site_a, make_scanner, settings
):
    # A webhook that cannot be reached; its URL carries a token.
    AlertSettings.objects.create(site=site_a, webhook_url="http://127.0.0.1:9/hook?token=s3cr3t")
    alert = _alert(site_a, make_scanner(site_a, "MR-1"))
    with pytest.raises(notify.NotifyError) as raised:
        alert_notify(alert_id=alert.pk)
    alert.refresh_from_db()
    assert "s3cr3t" not in str(raised.value) and "s3cr3t" not in alert.notify_error


class _DripHook(BaseHTTPRequestHandler):
    """Answers one header line at a time, slowly: every read is quick, the answer never ends."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        import time

        self.rfile.read(int(self.headers["Content-Length"]))
        try:
            self.wfile.write(b"HTTP/1.1 204 No Content\r\n")
            for _ in range(40):
                self.wfile.write(b"X-Drip: a\r\n")
                self.wfile.flush()
                time.sleep(0.25)
            self.wfile.write(b"\r\n")
        except OSError:
            pass  # the client gave up, as it should

    def log_message(self, *args: object) -> None:
        pass


class _RedirectHook(BaseHTTPRequestHandler):
    target = ""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(307)
        self.send_header("Location", type(self).target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _serve(handler):
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_webhook_that_answers_forever_is_cut_off_at_the_timeout(monkeypatch):
    monkeypatch.setattr(notify, "WEBHOOK_TIMEOUT_S", 1)
    server = _serve(_DripHook)
    try:
        with pytest.raises(notify.NotifyError):
            notify.webhook_post(url=f"http://127.0.0.1:{server.server_port}/", payload={"a": 1})
    finally:
        server.shutdown()


def test_a_webhook_redirect_is_not_followed():
    elsewhere = _serve(_FailingOnceHook)
    _FailingOnceHook.calls = 1  # it would answer 204
    _RedirectHook.target = f"http://127.0.0.1:{elsewhere.server_port}/stolen"
    redirecting = _serve(_RedirectHook)
    try:
        with pytest.raises(notify.NotifyError, match="307"):
            notify.webhook_post(
                url=f"http://127.0.0.1:{redirecting.server_port}/", payload={"a": 1}
            )
        assert _FailingOnceHook.calls == 1  # nothing reached the other server
    finally:
        redirecting.shutdown()
        elsewhere.shutdown()
