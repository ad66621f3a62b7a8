"""Completing an upload hands it to a real Celery worker, which ingests it (default store)."""

from __future__ import annotations

import time

import pytest

from tests.deid.builders import mr_dataset, to_bytes
from tests.ingest.test_uploads import _put, _start


@pytest.mark.django_db(transaction=True)
@pytest.mark.servers
def test_completing_an_upload_has_a_worker_ingest_it(api, operator_a, celery_worker_process):
    data = to_bytes(mr_dataset(4))
    upload = _start(api, operator_a, data)
    _put(api, upload["id"], 0, data)
    assert api.post(f"/api/uploads/{upload['id']}/complete/").status_code == 202
    deadline = time.monotonic() + 60
    state = {}
    while time.monotonic() < deadline:
        state = api.get(f"/api/uploads/{upload['id']}/").json()
        if state["status"] in ("done", "failed"):
            break
        time.sleep(0.2)
    assert state["status"] == "done", state
    assert state["results"][0]["status"] == "accepted"
