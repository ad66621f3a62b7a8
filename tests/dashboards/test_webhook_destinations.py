"""Alert webhooks never reach the installation's own network unless an operator listed the
destination (ARTISCAN_WEBHOOK_ALLOW): a site administrator sets the URL, so an unchecked URL
would let them make the server POST to loopback services, the cloud metadata address or the
hospital's intranet (server-side request forgery). Real sockets and a real local HTTP server."""

from __future__ import annotations

import ipaddress
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from backend.dashboards import notify
from backend.dashboards.models import Alert, AlertSettings
from backend.dashboards.services import alert_notify
from tests.dashboards.factories import BASE_WEEK


class _Hook(BaseHTTPRequestHandler):
    calls = 0
    host_header = ""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls += 1
        type(self).host_header = self.headers["Host"]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook():
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.calls = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/admin/",
        "http://127.1.2.3/",
        "http://localhost/",
        "http://api.localhost/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",  # cloud instance metadata
        "http://10.0.0.5/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
    ],
)
def test_internal_destinations_are_refused(settings, url):
    settings.ARTISCAN_WEBHOOK_ALLOW = []
    with pytest.raises(notify.WebhookRefused, match="internal address"):
        notify.webhook_check(url, resolve=False)
    with pytest.raises(notify.WebhookRefused, match="internal address"):
        notify.webhook_post(url=url, payload={"a": 1})


def test_public_addresses_pass_and_are_what_the_sender_connects_to(settings):
    settings.ARTISCAN_WEBHOOK_ALLOW = []
    assert notify.webhook_check("https://93.184.215.14/hook") == [
        ipaddress.ip_address("93.184.215.14")
    ]
    assert notify.webhook_check("https://[2606:4700::1111]/") == [
        ipaddress.ip_address("2606:4700::1111")
    ]


def test_a_name_is_judged_by_every_address_it_resolves_to(settings):
    """This machine's own host name resolves (through /etc/hosts or DNS) to its addresses; the
    check must refuse it exactly when one of them is not public."""
    settings.ARTISCAN_WEBHOOK_ALLOW = []
    name = socket.gethostname()
    resolved = {
        ipaddress.ip_address(info[4][0])
        for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    }
    internal = [a for a in resolved if not (a.is_global and not a.is_multicast)]
    url = f"http://{name}/hook"
    if internal:
        with pytest.raises(notify.WebhookRefused, match="resolves to internal address"):
            notify.webhook_check(url)
        # Saving the setting judges the spelling only (the name may resolve only on site).
        assert notify.webhook_check(url, resolve=False) == []
    else:
        assert set(notify.webhook_check(url)) == resolved


def test_a_refused_webhook_sends_nothing(settings, hook):
    settings.ARTISCAN_WEBHOOK_ALLOW = []
    with pytest.raises(notify.WebhookRefused):
        notify.webhook_post(url=f"http://127.0.0.1:{hook}/hook", payload={"a": 1})
    assert _Hook.calls == 0


def test_listed_networks_and_names_are_posted_to(settings, hook):
    settings.ARTISCAN_WEBHOOK_ALLOW = ["127.0.0.0/8"]
    assert notify.webhook_post(url=f"http://127.0.0.1:{hook}/a", payload={"a": 1}) == 204
    settings.ARTISCAN_WEBHOOK_ALLOW = ["localhost"]
    assert notify.webhook_post(url=f"http://localhost:{hook}/b", payload={"a": 1}) == 204
    assert _Hook.host_header == f"localhost:{hook}"  # the name, not the pinned address
    assert _Hook.calls == 2
    settings.ARTISCAN_WEBHOOK_ALLOW = ["10.0.0.0/8"]  # another network: loopback stays refused
    with pytest.raises(notify.WebhookRefused):
        notify.webhook_post(url=f"http://127.0.0.1:{hook}/c", payload={"a": 1})
    assert _Hook.calls == 2


@pytest.mark.django_db
def test_an_alert_aimed_inside_records_why_and_keeps_the_token_out(settings, site_a, make_scanner):
    settings.ARTISCAN_WEBHOOK_ALLOW = []
    AlertSettings.objects.create(
        site=site_a, webhook_url="http://169.254.169.254/latest?token=s3cr3t"
    )
    alert = Alert.objects.create(
        site=site_a, scanner=make_scanner(site_a, "MR-1"), metric="spike", week=BASE_WEEK,
        count=16, total=40, baseline_count=30, baseline_total=320, baseline_weeks=8,
        dispersion=1.5, p_value=1e-6, threshold=1e-3,
    )  # fmt: skip
    with pytest.raises(notify.WebhookRefused):
        alert_notify(alert_id=alert.pk)
    alert.refresh_from_db()
    assert alert.notified_at is None
    assert "internal address" in alert.notify_error and "s3cr3t" not in alert.notify_error


@pytest.mark.django_db
def test_the_settings_api_refuses_internal_webhooks_unless_listed(api, settings, site_a, admin_a):
    url = f"/api/dashboards/sites/{site_a.pk}/alert-settings/"
    settings.ARTISCAN_WEBHOOK_ALLOW = []
    for bad in ("http://169.254.169.254/latest", "http://localhost:5432/", "http://10.1.2.3/x"):
        answer = api.as_(admin_a).put(url, {"webhook_url": bad}, format="json")
        assert answer.status_code == 400, bad
        assert "ARTISCAN_WEBHOOK_ALLOW" in str(answer.json())
    assert AlertSettings.objects.filter(site=site_a).count() == 0
    settings.ARTISCAN_WEBHOOK_ALLOW = ["10.0.0.0/8"]
    ok = api.as_(admin_a).put(url, {"webhook_url": "http://10.1.2.3/x"}, format="json")
    assert ok.status_code == 200
    assert AlertSettings.objects.get(site=site_a).webhook_url == "http://10.1.2.3/x"
