"""Following a real Orthanc's /changes feed: stable series are ingested once, the cursor survives
restarts, and series can be deleted from Orthanc after ingest."""

from __future__ import annotations

import time

import pytest

from backend.ingest.models import OrthancSource
from backend.ingest.orthanc import OrthancClient, OrthancError
from backend.ingest.services import orthanc_poll
from backend.studies.models import Instance
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = pytest.mark.django_db


def _client(orthanc) -> OrthancClient:
    return OrthancClient(orthanc["url"], username=orthanc["username"], password=orthanc["password"])


def _wait_for_stable(client: OrthancClient, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        changes, _, _ = client.changes(since=0, limit=1000)
        if sum(c.change_type == "StableSeries" for c in changes) >= count:
            return
        time.sleep(0.3)
    raise TimeoutError("Orthanc did not mark the series stable")


def test_a_stable_series_is_ingested_once_and_the_cursor_is_kept(orthanc, site_a, monkeypatch):
    client = _client(orthanc)
    for i in (1, 2, 3):
        client.upload(to_bytes(mr_dataset(i)))
    _wait_for_stable(client, 1)
    monkeypatch.setenv("ORTHANC_TEST_PASSWORD", orthanc["password"])
    source = OrthancSource.objects.create(
        site=site_a,
        url=orthanc["url"],
        username=orthanc["username"],
        password_env="ORTHANC_TEST_PASSWORD",
    )
    result = orthanc_poll(source=source)
    assert result.series == 1
    assert [o.status for o in result.outcomes] == ["accepted"] * 3
    assert Instance.objects.filter(site=site_a).count() == 3
    cursor = OrthancSource.objects.get(pk=source.pk).last_change
    assert cursor > 0

    # A restarted follower (a fresh row from the database) resumes after the cursor.
    again = orthanc_poll(source=OrthancSource.objects.get(pk=source.pk))
    assert again.series == 0 and again.outcomes == []
    assert Instance.objects.count() == 3


def test_series_are_deleted_from_orthanc_when_asked(orthanc, site_a):
    client = _client(orthanc)
    client.upload(to_bytes(mr_dataset(1)))
    _wait_for_stable(client, 1)
    source = OrthancSource.objects.create(site=site_a, url=orthanc["url"], delete_after_ingest=True)
    orthanc_poll(source=source, client=client)
    assert client._get("/series").json() == []
    assert Instance.objects.count() == 1


def test_an_instance_over_the_size_limit_is_left_in_orthanc_unread(
    orthanc, site_a, settings, caplog
):
    """Memory bounded per file whatever the source holds: the download stops at the limit, the
    instance stays in Orthanc (not deleted, though the source deletes what it ingests), the
    rest of its series is ingested."""
    client = _client(orthanc)
    small = to_bytes(mr_dataset(1, rows=32, columns=32))
    big = to_bytes(mr_dataset(2, rows=512, columns=512))
    settings.ARTISCAN_MAX_INSTANCE_BYTES = (len(small) + len(big)) // 2
    client.upload(small)
    kept = client.upload(big)["ID"]
    _wait_for_stable(client, 1)
    source = OrthancSource.objects.create(site=site_a, url=orthanc["url"], delete_after_ingest=True)
    result = orthanc_poll(source=source, client=client)
    assert [o.status for o in result.outcomes] == ["accepted"]
    assert Instance.objects.count() == 1
    assert client._get("/instances").json() == [kept]  # the small one deleted, the big one kept
    assert "larger than ARTISCAN_MAX_INSTANCE_MB: left in Orthanc" in caplog.text


class _LateSlice(OrthancClient):
    """A client that, as the follower fetches the first file of a stable series, lets the
    scanner send one more slice of the same series to Orthanc (a real upload)."""

    late = to_bytes(mr_dataset(2))

    def instance_file(self, instance_id: str, max_bytes: int | None = None) -> bytes:
        if self.late:
            self.upload(self.late)
            self.late = b""
        return super().instance_file(instance_id, max_bytes)


def test_a_slice_that_arrives_during_the_ingest_is_not_deleted_unseen(orthanc, site_a):
    """With delete-after-ingest, only the instances ingested are deleted: a slice that reached
    Orthanc while its series was read (deleting the whole series deleted it, and Orthanc drops
    the change feed's entries of what it deletes) is ingested with the series' next change."""
    client = _LateSlice(orthanc["url"], username=orthanc["username"], password=orthanc["password"])
    client.upload(to_bytes(mr_dataset(1)))
    _wait_for_stable(client, 1)
    source = OrthancSource.objects.create(site=site_a, url=orthanc["url"], delete_after_ingest=True)
    first = orthanc_poll(source=source, client=client)
    assert [o.status for o in first.outcomes] == ["accepted"]
    assert len(client._get("/instances").json()) == 1  # the late slice, kept
    _wait_for_stable(client, 2)
    second = orthanc_poll(source=OrthancSource.objects.get(pk=source.pk), client=client)
    assert [o.status for o in second.outcomes] == ["accepted"]
    assert Instance.objects.filter(site=site_a).count() == 2
    assert client._get("/instances").json() == []


def test_wrong_credentials_are_an_error_that_is_recorded(orthanc, site_a):
    source = OrthancSource.objects.create(site=site_a, url=orthanc["url"], username="artiscan")
    with pytest.raises(OrthancError, match="401"):
        orthanc_poll(source=source)
    assert "401" in OrthancSource.objects.get(pk=source.pk).last_error
