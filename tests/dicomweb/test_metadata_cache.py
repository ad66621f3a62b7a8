"""WADO-RS metadata is kept per instance at ingest and served from there: the same bytes as
parsing the stored file, for series ingested before (filled at the first request) and after."""

from __future__ import annotations

import io
import json

import pydicom
import pytest

from backend.ingest.services import series_ingest
from backend.storage.store import store_delete, store_get
from backend.studies.models import Instance, InstanceMetadata, Series
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scratch_store")]


def _parsed(instance: Instance) -> dict:
    """What the endpoint answered before anything was kept: decrypt, parse, drop the pixels."""
    ds = pydicom.dcmread(io.BytesIO(store_get(instance.storage_key)))
    del ds.PixelData
    return ds.to_json_dict(bulk_data_threshold=2**20)


def _ingest(site, n: int = 3) -> Series:
    outcomes = series_ingest(
        site=site, files=[to_bytes(mr_dataset(i)) for i in range(1, n + 1)], source="stow"
    )
    assert {o.status for o in outcomes} == {"accepted"}
    return Series.objects.select_related("study").get(pk=outcomes[0].series_id)


def _url(series: Series, sop_uid: str | None = None) -> str:
    url = f"/dicomweb/studies/{series.study.study_uid}/series/{series.series_uid}"
    return f"{url}/instances/{sop_uid}/metadata" if sop_uid else f"{url}/metadata"


def _expected(series: Series) -> bytes:
    instances = series.instances.order_by("instance_number", "sop_uid")
    return json.dumps([_parsed(i) for i in instances]).encode()


def test_ingest_keeps_metadata_equal_to_parsing_the_stored_file(api, radiologist_a, site_a):
    series = _ingest(site_a)
    assert InstanceMetadata.objects.filter(instance__series=series).count() == 3
    response = api.as_(radiologist_a).get(_url(series))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom+json"
    assert response.content == _expected(series)
    body = response.json()
    assert [item["00200013"]["Value"] for item in body] == [[1], [2], [3]]
    assert "7FE00010" not in body[0]


def test_a_series_ingested_before_metadata_was_kept_is_filled_at_its_first_request(
    api, radiologist_a, site_a
):
    series = _ingest(site_a)
    InstanceMetadata.objects.all().delete()  # as stored before the metadata was kept
    first = api.as_(radiologist_a).get(_url(series))
    assert first.status_code == 200 and first.content == _expected(series)
    assert InstanceMetadata.objects.filter(instance__series=series).count() == 3
    again = api.as_(radiologist_a).get(_url(series))
    assert again.content == first.content


def test_a_partly_kept_series_is_completed_in_order(api, radiologist_a, site_a):
    series = _ingest(site_a)
    InstanceMetadata.objects.filter(instance__instance_number=2).delete()
    response = api.as_(radiologist_a).get(_url(series))
    assert response.content == _expected(series)
    assert InstanceMetadata.objects.filter(instance__series=series).count() == 3


def test_instance_metadata_is_the_kept_text_and_filled_when_missing(api, radiologist_a, site_a):
    series = _ingest(site_a)
    instance = series.instances.get(instance_number=2)
    expected = json.dumps([_parsed(instance)]).encode()
    assert api.as_(radiologist_a).get(_url(series, instance.sop_uid)).content == expected
    InstanceMetadata.objects.filter(instance=instance).delete()
    assert api.as_(radiologist_a).get(_url(series, instance.sop_uid)).content == expected
    assert InstanceMetadata.objects.filter(instance=instance).exists()


def test_another_sites_series_and_instance_metadata_are_404(api, radiologist_b, site_a):
    series = _ingest(site_a)
    InstanceMetadata.objects.filter(instance__instance_number=1).delete()
    sop_uid = series.instances.get(instance_number=1).sop_uid
    assert api.as_(radiologist_b).get(_url(series)).status_code == 404
    assert api.as_(radiologist_b).get(_url(series, sop_uid)).status_code == 404
    # Nothing was filled in on the refused caller's behalf.
    assert not InstanceMetadata.objects.filter(instance__instance_number=1).exists()


def test_metadata_may_be_cached_by_the_browser_only_and_is_revalidated(api, radiologist_a, site_a):
    series = _ingest(site_a)
    client = api.as_(radiologist_a)
    response = client.get(_url(series))
    assert response["Cache-Control"] == "private, no-cache"
    assert "Authorization" in response["Vary"] and "Cookie" in response["Vary"]
    unchanged = client.get(_url(series), HTTP_IF_NONE_MATCH=response["ETag"])
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged["Cache-Control"] == "private, no-cache"
    series_ingest(site=site_a, files=[to_bytes(mr_dataset(4))], source="stow")
    grown = client.get(_url(series), HTTP_IF_NONE_MATCH=response["ETag"])
    assert grown.status_code == 200 and len(grown.json()) == 4


def test_refusals_are_not_cacheable(api, radiologist_b, site_a):
    series = _ingest(site_a)
    assert api.as_(radiologist_b).get(_url(series))["Cache-Control"] == "no-store"


@pytest.mark.parametrize("kept", [True, False])
def test_a_series_whose_files_are_gone_is_an_error_not_a_list(api, radiologist_a, site_a, kept):
    series = _ingest(site_a)
    if not kept:
        InstanceMetadata.objects.all().delete()
    store_delete(series.instances.get(instance_number=2).storage_key)  # a broken disk, a purge
    response = api.as_(radiologist_a).get(_url(series))
    assert response.status_code == 500
    assert response["Cache-Control"] == "no-store"


def test_frames_are_kept_by_this_browser_only_and_each_fetch_is_audited(
    api, radiologist_a, radiologist_b, site_a
):
    from backend.audit.models import AuditEvent

    series = _ingest(site_a)
    sop_uid = series.instances.get(instance_number=2).sop_uid
    url = f"{_url(series).rsplit('/', 1)[0]}/instances/{sop_uid}/frames/1"
    before = AuditEvent.objects.count()
    served = api.as_(radiologist_a).get(
        url, HTTP_ACCEPT='multipart/related; type="application/octet-stream"'
    )
    assert served.status_code == 200
    # A stored instance's pixels never change under their URL: private, for this session only,
    # and per Accept (the same URL may answer in another transfer syntax).
    assert served["Cache-Control"] == "private, max-age=3600"
    assert {"Accept", "Authorization", "Cookie"} <= {v.strip() for v in served["Vary"].split(",")}
    assert AuditEvent.objects.count() == before + 1
    refused = api.as_(radiologist_b).get(url)
    assert refused.status_code == 404 and refused["Cache-Control"] == "no-store"
    missing = api.as_(radiologist_a).get(url.replace("/frames/1", "/frames/9"))
    assert missing.status_code == 404 and missing["Cache-Control"] == "no-store"
