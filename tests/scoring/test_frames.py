"""An Enhanced MR (multi-frame) instance is scored frame by frame by the workers: one score per
frame, each frame with its own header values (the same code path as ``ml score``), masks under
per-frame keys, the result API and the DICOM SEG naming the frame."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from backend.ingest.services import series_ingest
from backend.scoring import services
from backend.scoring.masks import mask_get, mask_key, mask_put
from backend.scoring.models import Finding, InstanceScore, ModelVersion, ScoringRun
from backend.scoring.seg import seg_store
from backend.scoring.services import model_weights_path, series_score
from backend.storage.store import store_get
from backend.studies.models import Series
from tests.deid.builders import enhanced_mr_dataset, mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scratch_store")]


def _enhanced(frames: int, number: int = 3, size: int = 64) -> pydicom.Dataset:
    """A multi-frame image whose frames differ in content and in echo time (per frame)."""
    ds = enhanced_mr_dataset(frames=frames, rows=size, columns=size)
    ds.SOPInstanceUID, ds.InstanceNumber = generate_uid(), number
    base = np.arange(size * size, dtype=np.int64).reshape(size, size) * 3
    stack = np.stack([(base + 397 * f) % 4096 for f in range(frames)]).astype(np.uint16)
    ds.PixelData = stack.tobytes()
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        item.MREchoSequence[0].EffectiveEchoTime = 20.0 + 30.0 * index
    return ds


def _ingest(site, frames: int, classic=(1, 2)) -> Series:
    files = [to_bytes(mr_dataset(i, rows=64, columns=64)) for i in classic]
    files.append(to_bytes(_enhanced(frames)))
    outcomes = series_ingest(site=site, files=files, source="upload")
    assert [o.status for o in outcomes] == ["accepted"] * len(files)
    return Series.objects.get(site=site, modality="MR")


def _expected(instance):
    """What ``ml score`` gives for the file: its frames, each with its own header values."""
    from ml.pipeline import get_pipeline

    ds = pydicom.dcmread(io.BytesIO(store_get(instance.storage_key)))
    return get_pipeline(model_weights_path()).score_datasets([ds])


def test_each_frame_of_an_enhanced_mr_instance_is_scored_as_ml_score_scores_it(site_a):
    series = _ingest(site_a, frames=3)
    run = series_score(series_id=series.pk)
    assert run is not None and run.status == "done"
    enhanced = series.instances.get(instance_number=3)
    assert enhanced.frame_count == 3
    scores = {s.frame: s for s in InstanceScore.objects.filter(run=run, instance=enhanced)}
    assert sorted(scores) == [1, 2, 3]
    assert InstanceScore.objects.filter(run=run).count() == 5  # 2 classic + 3 frames
    expected = _expected(enhanced)
    assert len(expected.sop_instance_uid) == 3
    findings = list(Finding.objects.filter(run=run, instance=enhanced))
    marked = {(f, k) for f in range(3) for k in range(10) if expected.masks[f, k].any()}
    assert {(f.frame - 1, list(expected.classes).index(f.artifact_type)) for f in findings} == (
        marked
    )
    assert marked, "the shipped model marks something on the test frames"
    for finding in findings:
        k = list(expected.classes).index(finding.artifact_type)
        assert np.array_equal(mask_get(finding.mask_key), expected.masks[finding.frame - 1, k])
        assert f"/frames/{finding.frame}/" in finding.mask_key
        assert finding.confidence == pytest.approx(float(expected.presence[finding.frame - 1, k]))
    # The frames differ (content and echo time), and so do their results.
    assert len({round(s.suitability, 6) for s in scores.values()}) > 1
    enhanced.refresh_from_db()
    assert enhanced.suitability == pytest.approx(min(s.suitability for s in scores.values()))
    # A classic instance keeps its one score, frame 1, and its mask keys without a frame.
    classic = series.instances.get(instance_number=1)
    assert list(
        InstanceScore.objects.filter(run=run, instance=classic).values_list("frame", flat=True)
    ) == [1]
    assert all(
        "/frames/" not in f.mask_key for f in Finding.objects.filter(run=run, instance=classic)
    )
    assert series_score(series_id=series.pk) == run  # nothing left: nothing scored twice
    assert InstanceScore.objects.filter(run=run).count() == 5


def test_an_instance_of_more_frames_than_a_batch_is_claimed_whole(site_a, monkeypatch):
    """A claim never splits an instance (its frames are written together), and the network
    still sees at most CLAIM_BATCH slices at a time."""
    from ml.pipeline import ScoringPipeline

    monkeypatch.setattr(services, "CLAIM_BATCH", 4)
    seen: list[int] = []
    real = ScoringPipeline.score_datasets

    def spy(self, datasets, images=None, frames=None):
        seen.append(len(datasets))
        return real(self, datasets, images=images, frames=frames)

    monkeypatch.setattr(ScoringPipeline, "score_datasets", spy)
    series = _ingest(site_a, frames=7, classic=(1, 2, 4, 5))
    run = series_score(series_id=series.pk)
    assert run is not None
    enhanced = series.instances.get(instance_number=3)
    frames = InstanceScore.objects.filter(run=run, instance=enhanced).values_list(
        "frame", flat=True
    )
    assert sorted(frames) == list(range(1, 8))
    assert InstanceScore.objects.filter(run=run).count() == 11
    assert max(seen) <= 4 and sum(seen) == 11
    expected = _expected(enhanced)
    by_frame = {s.frame: s for s in InstanceScore.objects.filter(run=run, instance=enhanced)}
    for frame, score in by_frame.items():
        masks = [
            expected.masks[frame - 1, k] for k in range(10) if expected.masks[frame - 1, k].any()
        ]
        from backend.scoring.index import slice_suitability

        assert score.suitability == pytest.approx(
            slice_suitability(model_suitability=float(expected.suitability[frame - 1]), masks=masks)
        )


def test_the_result_api_gives_one_entry_per_frame(api, radiologist_a, site_a):
    series = _ingest(site_a, frames=2)
    series_score(series_id=series.pk)
    body = api.as_(radiologist_a).get(f"/api/series/{series.pk}/result/").json()
    entries = [(i["instance_number"], i["frame"], i["frame_count"]) for i in body["instances"]]
    assert entries == [(1, 1, 1), (2, 1, 1), (3, 1, 2), (3, 2, 2)]
    for entry in body["instances"]:
        ids = {f["id"] for f in entry["findings"]}
        assert (
            set(
                Finding.objects.filter(
                    instance_id=entry["instance_id"], frame=entry["frame"]
                ).values_list("id", flat=True)
            )
            == ids
        )


def test_the_series_reason_names_the_frame_of_its_worst_slice():
    from backend.scoring.index import series_reason

    label = services.slice_label(7, 3, 20)
    assert label == "7 frame 3" and services.slice_label(7, 1, 1) == "7"
    reason = series_reason([("5", 0.9, "fine"), (label, 0.2, "motion across the head")])
    assert "worst slice 7 frame 3: motion across the head" in reason


def test_the_seg_of_an_enhanced_mr_instance_references_its_frames(site_a):
    """One SEG over the classic instances and one per multi-frame instance (a SEG may reference
    the frames of one multi-frame source only); highdicom reads each back with our masks."""
    series = _ingest(site_a, frames=3)
    model = ModelVersion.objects.create(
        name="test", version="t1", sha256="0" * 64, weights_key="-", classes=[]
    )
    run = ScoringRun.objects.create(series=series, site=site_a, model_version=model, status="done")
    rng = np.random.default_rng(0)
    made = []
    for instance in series.instances.order_by("instance_number"):
        for frame in range(1, instance.frame_count + 1):
            if instance.frame_count > 1 and frame == 2:
                continue  # a frame without findings
            mask = (rng.random((64, 64)) > 0.7).astype(np.uint8)
            key = mask_key(
                site_id=site_a.pk, run_id=str(run.pk), sop_uid=instance.sop_uid, artifact="motion",
                frame=frame if instance.frame_count > 1 else None,
            )  # fmt: skip
            mask_put(key, mask)
            made.append(
                Finding.objects.create(
                    run=run,
                    instance=instance,
                    frame=frame,
                    site=site_a,
                    artifact_type="motion",
                    mask_key=key,
                    area_px=int(mask.sum()),
                    area_fraction=float(mask.mean()),
                    confidence=0.9,
                )
            )
    stored = seg_store(run)
    assert len(stored) == 2
    assert len({i.series_id for i in stored}) == 1 and stored[0].series.modality == "SEG"
    assert sorted(i.instance_number for i in stored) == [1, 2]
    assert Series.objects.get(pk=stored[0].series_id).instance_count == 2
    enhanced = series.instances.get(instance_number=3)
    segs = [hd.seg.segread(io.BytesIO(store_get(i.storage_key))) for i in stored]
    [multi] = [
        s for s in segs
        if s.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        == enhanced.sop_uid
    ]  # fmt: skip
    assert multi.NumberOfFrames == 2  # frames 1 and 3: highdicom leaves the empty one out
    for finding in made:
        if finding.instance_id != enhanced.pk:
            continue
        theirs = multi.get_pixels_by_source_frame(
            source_sop_instance_uid=enhanced.sop_uid,
            source_frame_numbers=[finding.frame],
            segment_numbers=[1],
            combine_segments=False,
        )[0, :, :, 0]
        assert np.array_equal(theirs > 0, mask_get(finding.mask_key) > 0)
    # Rebuilt: the same objects replaced, no more.
    again = seg_store(run)
    assert sorted(i.pk for i in again) == sorted(i.pk for i in stored)


def test_a_training_example_of_a_multi_frame_instance_is_its_annotated_first_frame(site_a):
    """An annotation item is an instance drawn on its first frame: the training set takes that
    frame's pixels (it used to refuse the whole file as a multi-frame image)."""
    from annotation.training import _slice_arrays
    from ml.pipeline import frame_pixels

    series = _ingest(site_a, frames=3)
    enhanced = series.instances.get(instance_number=3)
    mask = np.zeros((64, 64), np.uint8)
    mask[4:12, 4:12] = 1
    example = _slice_arrays(enhanced, {"motion": mask}, False, "T2_TSE")
    first = frame_pixels(pydicom.dcmread(io.BytesIO(store_get(enhanced.storage_key))))[0]
    scale = float(np.percentile(first[first > 0], 99))
    assert np.allclose(example["images"], first / scale)
    assert example["masks"].shape == (10, 64, 64) and example["masks"][0].sum() == 64


def test_ai_assist_on_a_multi_frame_instance_gives_its_first_frames_masks(site_a):
    from annotation.assist import slice_model_masks

    series = _ingest(site_a, frames=3)
    enhanced = series.instances.get(instance_number=3)
    expected = _expected(enhanced)
    masks = slice_model_masks(instance_id=enhanced.pk)
    assert list(masks) == list(expected.classes)
    for k, name in enumerate(expected.classes):
        assert np.array_equal(masks[name], expected.masks[0, k])


def test_a_region_of_interest_on_one_frame_covers_that_slice_only(api, radiologist_a, site_a):
    series = _ingest(site_a, frames=3)
    series_score(series_id=series.pk)
    square = [[8, 8], [40, 8], [40, 40], [8, 40]]
    body = {"polygon": square, "first_instance": 3, "last_instance": 3, "frame": 2}
    response = api.as_(radiologist_a).put(f"/api/series/{series.pk}/roi/", body, format="json")
    assert response.status_code == 200, response.content
    result = response.json()
    assert result["roi"]["frame"] == 2
    covered = [
        (i["instance_number"], i["frame"])
        for i in result["instances"]
        if i["roi_suitability_index"] is not None
    ]
    assert covered == [(3, 2)]
    # The same range without a frame: every frame of the instance.
    body["frame"] = None
    result = api.as_(radiologist_a).put(f"/api/series/{series.pk}/roi/", body, format="json").json()
    covered = [
        (i["instance_number"], i["frame"])
        for i in result["instances"]
        if i["roi_suitability_index"] is not None
    ]
    assert covered == [(3, 1), (3, 2), (3, 3)]
    # A frame no instance in range has: a 400 with the reason.
    body["frame"] = 4
    refused = api.as_(radiologist_a).put(f"/api/series/{series.pk}/roi/", body, format="json")
    assert refused.status_code == 400 and "frame 4" in refused.content.decode()


def test_each_frames_advice_reads_that_frames_own_acquisition_values(site_a):
    """A multi-echo Enhanced MR file: frame 3 was acquired at TE 80 ms, the instance's row holds
    frame 1's 20 ms; the advice for frame 3 names 80."""
    from backend.scoring.advice import advise
    from ml.header import frame_values

    series = _ingest(site_a, frames=3)
    enhanced = series.instances.get(instance_number=3)
    assert enhanced.echo_time_ms == 20.0
    ds = pydicom.dcmread(io.BytesIO(store_get(enhanced.storage_key)))
    texts = [
        advise(
            "susceptibility",
            services._advice_header(enhanced, frame_values(ds, f, services._FRAME_ADVICE)),
        ).text()
        for f in range(3)
    ]
    for te, text in zip((20, 50, 80), texts, strict=True):
        assert f"shorten TE from {te} ms" in text
    # Scored, every finding's advice is its own frame's.
    run = series_score(series_id=series.pk)
    for finding in Finding.objects.filter(run=run, instance=enhanced):
        values = frame_values(ds, finding.frame - 1, services._FRAME_ADVICE)
        own = advise(finding.artifact_type, services._advice_header(enhanced, values)).text()
        assert finding.advice == own
