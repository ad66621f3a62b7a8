"""Personas and data for the annotation tests: a lead and two readers at site A, a lead at
site B, and series ingested for real (de-identified DICOM in the encrypted store)."""

from __future__ import annotations

import base64
import os

import numpy as np
import pytest

from annotation.rle import rle_encode
from tests.conftest import _persona

SIZE = 32
"""Rows and columns of the series that :func:`ingest_series` makes by default."""


def square(r0: int, r1: int, c0: int, c1: int) -> list[int]:
    """The RLE of a ``SIZE``² mask with one filled rectangle."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[r0:r1, c0:c1] = 1
    return rle_encode(mask)


@pytest.fixture
def lead_a(site_a):
    return _persona("lead_a", site_a, "annotation_lead")


@pytest.fixture
def reader2_a(site_a):
    return _persona("reader2_a", site_a, "annotator")


@pytest.fixture
def lead_b(site_b):
    return _persona("lead_b", site_b, "annotation_lead")


@pytest.fixture
def private_store(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "store"
    settings.VAR_DIR = tmp_path / "var"
    settings.STORAGE_KEYS = "s1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()


def ingest_series(site, number: int, slices: int = 3, size: int = SIZE, noisy: bool = False):
    """One MR series of ``slices`` images (``size``²), ingested as an upload; returns it.
    ``noisy``: with heavy Gaussian noise (seeded), so the shipped model surely marks something
    (the builders' plain ramp is not an artifact, and a better model rightly marks nothing)."""
    import numpy as np

    from backend.ingest.services import series_ingest
    from backend.studies.models import Series
    from tests.deid.builders import mr_dataset, to_bytes

    files = []
    for i in range(1, slices + 1):
        ds = mr_dataset(number * 100 + i, rows=size, columns=size)
        if noisy:
            ramp = np.frombuffer(ds.PixelData, "<u2").reshape(size, size).astype(np.float64)
            noise = np.random.default_rng(i).normal(0, 0.25 * np.percentile(ramp, 99), ramp.shape)
            ds.PixelData = np.clip(np.abs(ramp + noise), 0, 4095).astype("<u2").tobytes()
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.8.498.7{number:04d}"
        ds.InstanceNumber = i
        files.append(to_bytes(ds))
    before = set(Series.objects.filter(site=site).values_list("pk", flat=True))
    series_ingest(site=site, files=files, source="upload")
    return Series.objects.filter(site=site).exclude(pk__in=before).get()


def one_reader_campaign(lead, site, reader, series, *, blinded: bool, name: str = "campaign"):
    """An active campaign of ``series`` (a list) read by ``reader`` alone, on motion."""
    from annotation.services import campaign_create

    return campaign_create(
        user=lead.user,
        site_id=site.pk,
        name=name,
        artifact_types=["motion"],
        readers_per_image=1,
        blinded=blinded,
        reader_ids=[reader.user.pk],
        series_ids=[s.pk for s in series],
    )
