"""The demo's brain series: real template anatomy, clean and with simulated artifacts, through
the de-identifying door; running the demo set-up again stores nothing twice."""

from __future__ import annotations

import pydicom
import pytest

from backend.ingest.demo_series import DEMO_SERIES, SLICES, demo_series_ingest
from backend.storage.store import store_get
from backend.studies.models import Instance, Series

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scratch_store")]


def test_the_demo_series_are_ingested_de_identified_and_once(site_a):
    assert demo_series_ingest(site=site_a) == len(DEMO_SERIES) * SLICES
    series = Series.objects.filter(site=site_a, modality="MR")
    assert series.count() == len(DEMO_SERIES)
    assert {s.instance_count for s in series} == {SLICES}
    stored = pydicom.dcmread(
        pydicom.filebase.DicomBytesIO(store_get(Instance.objects.first().storage_key))
    )
    assert (
        "DEMO" not in str(stored.get("PatientName", "")) and stored.PatientIdentityRemoved == "YES"
    )
    clean, moved = (
        Instance.objects.filter(series__series_number=n, instance_number=9).get() for n in (1, 2)
    )
    pixels = [
        pydicom.dcmread(pydicom.filebase.DicomBytesIO(store_get(i.storage_key))).pixel_array
        for i in (clean, moved)
    ]
    assert pixels[0].max() > 1000 and (pixels[0] != pixels[1]).any()  # anatomy; the artifact
    assert demo_series_ingest(site=site_a) == 0
    assert Instance.objects.filter(series__site=site_a).count() == len(DEMO_SERIES) * SLICES
