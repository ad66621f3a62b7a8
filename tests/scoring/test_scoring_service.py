"""Scoring a series with the shipped model: results land once per instance and model version,
late slices are scored incrementally, masks are stored compactly and read back equal."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from backend.ingest.services import series_ingest
from backend.scoring.masks import mask_get
from backend.scoring.models import Finding, InstanceScore, RunStatus
from backend.scoring.services import series_score
from backend.storage.store import store_get
from backend.studies.models import Series
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scratch_store")]


def _ingest(site, numbers):
    series_ingest(
        site=site,
        files=[to_bytes(mr_dataset(i, rows=64, columns=64)) for i in numbers],
        source="upload",
    )
    return Series.objects.get(site=site)


def test_a_series_is_scored_once_per_instance_and_model(site_a):
    series = _ingest(site_a, [1, 2, 3])
    run = series_score(series_id=series.pk)
    assert run is not None and run.status == RunStatus.DONE
    assert InstanceScore.objects.filter(run=run).count() == 3
    series.refresh_from_db()
    assert series.status == "scored" and series.current_run == run
    assert 0.0 <= series.suitability <= 1.0
    assert run.reason
    again = series_score(series_id=series.pk)
    assert again == run
    assert InstanceScore.objects.filter(run=run).count() == 3  # nothing scored twice


def test_a_late_slice_is_scored_into_the_same_run(site_a):
    series = _ingest(site_a, [1, 2])
    run = series_score(series_id=series.pk)
    _ingest(site_a, [3])
    assert series_score(series_id=series.pk) == run
    assert InstanceScore.objects.filter(run=run).count() == 3


def test_masks_are_stored_as_png_and_read_back_equal(site_a):
    from backend.scoring.services import model_weights_path
    from ml.pipeline import get_pipeline

    series = _ingest(site_a, [1, 2, 3])
    series_score(series_id=series.pk)
    instances = list(series.instances.order_by("instance_number"))
    datasets = [
        pydicom.dcmread(pydicom.filebase.DicomBytesIO(store_get(i.storage_key))) for i in instances
    ]
    expected = get_pipeline(model_weights_path()).score_datasets(datasets)
    for finding in Finding.objects.filter(instance__series=series):
        index = instances.index(finding.instance)
        k = list(expected.classes).index(finding.artifact_type)
        assert np.array_equal(mask_get(finding.mask_key), expected.masks[index, k])
        assert finding.area_px == int(expected.masks[index, k].sum())
        assert finding.advice
    # Every type the model marked on an instance has its finding, and only those.
    marked = {(i, k) for i in range(3) for k in range(10) if expected.masks[i, k].any()}
    assert len(marked) == Finding.objects.filter(instance__series=series).count()


def test_the_result_api_returns_indices_reasons_and_findings(api, radiologist_a, site_a):
    series = _ingest(site_a, [1, 2])
    series_score(series_id=series.pk)
    body = api.as_(radiologist_a).get(f"/api/series/{series.pk}/result/").json()
    assert body["status"] == "scored" and 0 <= body["suitability_index"] <= 100
    assert [i["instance_number"] for i in body["instances"]] == [1, 2]
    assert all(i["reason"] for i in body["instances"])


def test_a_findings_mask_is_served_as_png_to_its_site_only(
    api, radiologist_a, radiologist_b, site_a
):
    series = _ingest(site_a, [1, 2, 3])
    series_score(series_id=series.pk)
    body = api.as_(radiologist_a).get(f"/api/series/{series.pk}/result/").json()
    findings = [f for i in body["instances"] for f in i["findings"]]
    assert findings, "the shipped model marks something on the test slices"
    finding = Finding.objects.get(pk=findings[0]["id"])
    response = api.as_(radiologist_a).get(findings[0]["mask_url"])
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    import io

    from PIL import Image

    served = (np.asarray(Image.open(io.BytesIO(response.content)).convert("L")) > 0).astype(
        np.uint8
    )
    assert np.array_equal(served, mask_get(finding.mask_key) > 0)
    assert api.as_(radiologist_b).get(findings[0]["mask_url"]).status_code == 404
    assert api.as_(radiologist_a).get("/api/findings/999999999/mask.png").status_code == 404
