"""The scoring result as a DICOM SEG: highdicom reads it back, its masks equal ours, it references
the source instances, and our DICOMweb serves it in the same study."""

from __future__ import annotations

import io
import logging
import warnings

import highdicom as hd
import numpy as np
import pydicom
import pytest

from backend.ingest.services import series_ingest
from backend.scoring.masks import mask_get, mask_key, mask_put
from backend.scoring.models import Finding, InstanceScore, ModelVersion, ScoringRun
from backend.scoring.seg import seg_store
from backend.scoring.services import run_seg_refresh
from backend.storage.store import store_get
from backend.studies.models import Series
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scratch_store")]


def _scored_series(site):
    """A series with a run whose findings we know (independent of what the model finds)."""
    series_ingest(
        site=site, files=[to_bytes(mr_dataset(i, rows=64, columns=64)) for i in (1, 2, 3)],
        source="upload",
    )  # fmt: skip
    series = Series.objects.get(site=site, modality="MR")
    model = ModelVersion.objects.create(
        name="test", version="t1", sha256="0" * 64, weights_key="-", classes=[]
    )
    run = ScoringRun.objects.create(series=series, site=site, model_version=model, status="done")
    rng = np.random.default_rng(0)
    for n, instance in enumerate(series.instances.order_by("instance_number")):
        for artifact in ("motion", "chemical_shift")[: n + 1]:
            mask = (rng.random((64, 64)) > 0.7).astype(np.uint8)
            key = mask_key(site_id=site.pk, run_id=str(run.pk), sop_uid=instance.sop_uid,
                           artifact=artifact)  # fmt: skip
            mask_put(key, mask)
            Finding.objects.create(
                run=run, instance=instance, site=site, artifact_type=artifact, mask_key=key,
                area_px=int(mask.sum()), area_fraction=float(mask.mean()), confidence=0.9,
            )  # fmt: skip
    return series, run


def test_the_seg_round_trips_through_highdicom_with_our_masks(site_a):
    series, run = _scored_series(site_a)
    findings = list(Finding.objects.filter(run=run).select_related("instance"))
    [instance] = seg_store(run)
    assert instance.series.modality == "SEG"
    seg = hd.seg.segread(io.BytesIO(store_get(instance.storage_key)))
    sources = {i.sop_uid for i in series.instances.all()}
    referenced = {
        item.ReferencedSOPInstanceUID
        for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == sources
    labels = {d.SegmentLabel: d.SegmentNumber for d in seg.SegmentSequence}
    for finding in findings:
        number = labels[finding.artifact_type.replace("_", " ")]
        ours = mask_get(finding.mask_key)
        theirs = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[finding.instance.sop_uid],
            segment_numbers=[number],
            combine_segments=False,
        )[0, :, :, 0]
        assert np.array_equal(theirs > 0, ours > 0)


def test_building_a_seg_logs_nothing_at_info_and_warns_nothing(site_a, caplog):
    """highdicom narrates every module it copies at INFO (ten lines per SEG in the worker's
    log), and warned that our pseudonymous patient name has one component; the installation's
    logging keeps highdicom to warnings, and the SEG builder expects that name."""
    _, run = _scored_series(site_a)
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert seg_store(run)
    assert not [r for r in caplog.records if r.name.startswith("highdicom")]
    assert not [w for w in caught if "person name" in str(w.message)]


def test_building_the_seg_twice_replaces_it(site_a):
    _, run = _scored_series(site_a)
    [first] = seg_store(run)
    [second] = seg_store(run)
    assert first.pk == second.pk and Series.objects.filter(modality="SEG").count() == 1
    ds = pydicom.dcmread(io.BytesIO(store_get(second.storage_key)))
    assert ds.Modality == "SEG" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"


def test_our_dicomweb_serves_the_seg_in_the_study(api, radiologist_a, site_a):
    series, run = _scored_series(site_a)
    [instance] = seg_store(run)
    study_uid = series.study.study_uid
    found = (
        api.as_(radiologist_a)
        .get(f"/dicomweb/studies/{study_uid}/series", {"Modality": "SEG"})
        .json()
    )
    assert [s["0020000E"]["Value"][0] for s in found] == [instance.series.series_uid]
    response = api.get(
        f"/dicomweb/studies/{study_uid}/series/{instance.series.series_uid}"
        f"/instances/{instance.sop_uid}"
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("multipart/related")
    assert b"1.2.840.10008.5.1.4.1.1.66.4" in response.content


def _score_all(run):
    for instance in run.series.instances.all():
        InstanceScore.objects.get_or_create(
            run=run, instance=instance, defaults={"suitability": 1.0, "nondiagnostic": False}
        )


def test_a_seg_request_overtaken_by_a_later_write_builds_nothing(site_a):
    _, run = _scored_series(site_a)
    _score_all(run)
    scored = run.instance_scores.count()
    assert run_seg_refresh(run_id=run.pk, scored=scored - 1) is None  # a later one covers it
    assert not Series.objects.filter(modality="SEG").exists()
    [instance] = run_seg_refresh(run_id=run.pk, scored=scored) or []
    assert instance.series.modality == "SEG"


def test_no_seg_while_slices_of_the_series_wait(site_a):
    series, run = _scored_series(site_a)
    _score_all(run)
    series_ingest(
        site=site_a, files=[to_bytes(mr_dataset(4, rows=64, columns=64))], source="upload"
    )
    assert series.instances.count() == 4
    assert run_seg_refresh(run_id=run.pk, scored=run.instance_scores.count()) is None
    assert not Series.objects.filter(modality="SEG").exists()


def test_a_quarantined_slice_does_not_hold_back_the_seg_of_the_rest(site_a):
    """A fourth slice arrives and is quarantined (it will never be scored): the SEG of the
    three scored slices is built all the same, and holds only their frames."""
    from backend.scoring.models import SliceAttempt

    series, run = _scored_series(site_a)
    _score_all(run)
    series_ingest(
        site=site_a, files=[to_bytes(mr_dataset(4, rows=64, columns=64))], source="upload"
    )
    fourth = series.instances.get(instance_number=4)
    SliceAttempt.objects.create(
        instance=fourth, model_version=run.model_version, site=site_a, attempts=3,
        quarantined=True, error="ScoringError: cannot decode the pixels",
    )  # fmt: skip
    [instance] = run_seg_refresh(run_id=run.pk, scored=run.instance_scores.count()) or []
    seg = pydicom.dcmread(io.BytesIO(store_get(instance.storage_key)))
    sources = {
        item.ReferencedSOPInstanceUID
        for frame in seg.PerFrameFunctionalGroupsSequence
        for derivation in frame.DerivationImageSequence
        for item in derivation.SourceImageSequence
    }
    assert fourth.sop_uid not in sources and len(sources) == 3
