"""The periodic refresh and the alert notification through a real Celery worker process."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from backend.dashboards.models import Alert, AlertSettings, QualityRollup
from backend.dashboards.tasks import dashboards_refresh_task
from tests.dashboards.factories import BASE_WEEK

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]

TRAILING = [(1, 20), (2, 20), (1, 20), (0, 20), (2, 20), (1, 20), (1, 20), (2, 20)]


def _wait(predicate, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, object]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_beat_task_rolls_up_in_the_worker_and_the_alert_reaches_the_webhook(
    celery_worker_process, site_a, make_scanner, make_scored
):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        AlertSettings.objects.create(
            site=site_a, webhook_url=f"http://127.0.0.1:{server.server_port}/artiscan"
        )
        scanner = make_scanner(site_a, "MR-7")
        for week, (spikes, total) in enumerate([*TRAILING, (12, 20)]):
            for i in range(total):
                make_scored(
                    site=site_a, scanner=scanner, week=week, instances=1, minute=i,
                    artifacts=("spike",) if i < spikes else (),
                )  # fmt: skip
        dashboards_refresh_task.delay()
        assert _wait(lambda: QualityRollup.objects.filter(site=site_a).count() == 9)
        assert _wait(lambda: len(_Hook.received) == 1), "the webhook was not called"
        payload = _Hook.received[0]
        assert (payload["metric"], payload["scanner"], payload["count"]) == ("spike", "MR-7", 12)
        assert payload["week"] == (BASE_WEEK + dt.timedelta(weeks=8)).isoformat()
        alert = Alert.objects.get()
        assert _wait(lambda: Alert.objects.get().notified_at is not None)
        assert alert.metric == "spike"
    finally:
        server.shutdown()
