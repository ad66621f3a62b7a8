"""The worklist goes live under ``manage.py serve`` — what ``make demo`` and a site run — and not
only under the plain daphne the other browser tests use. There, a process that holds connections
resumes accepting from a Twisted timer, and those timers ran in the context of a finished HTTP
request: every WebSocket handshake after the first page answered 500 ("ThreadSensitiveContext
has exited") and the worklist stayed "connecting" (``OwnSyncContext`` in
``backend/config/asgi.py``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from backend.realtime.services import event_publish
from tests.conftest import ROOT, _free_port, _listening_process, _server_env
from tests.factories import SeriesFactory, StudyFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


def test_the_worklist_goes_live_and_hears_events_under_serve(page, radiologist_a, site_a, tmp_path):
    from django.conf import settings

    from tests.conftest import PASSWORD

    series = SeriesFactory(study=StudyFactory(site=site_a), description="T2 FLAIR AX")
    env = _server_env(settings.DATABASES["default"]["NAME"])
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT, env=env, check=True, timeout=120,
    )  # fmt: skip
    port = _free_port()
    command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1"]
    log = tmp_path / "serve.log"
    with _listening_process(command, env=env, port=port, log=log, what="serve"):
        base = f"http://127.0.0.1:{port}"
        page.goto(f"{base}/accounts/login/")
        page.fill("#id_username", "rad_a")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/")
        for _ in range(2):  # the first page, and the same page again on warm connections
            page.wait_for_selector("#live[data-state=open]", timeout=20_000)
            page.reload()
        page.wait_for_selector("#live[data-state=open]", timeout=20_000)
        # "open" is sent before the connection has joined its site's group: publish until heard.
        for _ in range(20):
            event_publish(
                site_id=site_a.pk, kind="series.scored", data={"series_id": str(series.pk)}
            )
            if page.locator("#events li").count():
                break
            page.wait_for_timeout(1000)
        assert page.locator("#events li").count() >= 1
    assert "ThreadSensitiveContext" not in log.read_text()
