"""A scored series whose findings we choose (the shipped model's findings on synthetic slices are
not predictable enough to test a review against)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from backend.ingest.services import series_ingest
from backend.scoring.masks import mask_key, mask_put
from backend.scoring.models import Finding, InstanceScore, ModelVersion, ScoringRun
from backend.studies.models import Series, SeriesStatus
from tests.deid.builders import mr_dataset, to_bytes

# Where each artifact type's test mask lies (row0, row1, col0, col1), so a browser test knows
# where an overlay must change pixels.
BOXES = {"motion": (8, 28, 8, 40), "ghosting": (36, 56, 24, 56)}


def box_mask(rows: int, columns: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """A uint8 (rows, columns) mask, 1 inside ``box`` scaled from a 64×64 grid."""
    r0, r1, c0, c1 = box
    mask = np.zeros((rows, columns), np.uint8)
    mask[r0 * rows // 64 : r1 * rows // 64, c0 * columns // 64 : c1 * columns // 64] = 1
    return mask


def _let_real_scoring_finish(series: Series) -> None:
    """Ingest asks for scoring. When a real worker is running (a session fixture started by an
    earlier test), let it score the series first; the chosen run installed afterwards is then
    the series' current run and nothing overwrites it."""
    from backend.config.celery import app
    from backend.jobs.models import JobRecord, JobState

    if not app.control.ping(timeout=1.0):
        return  # no worker: the request waits in the queue and is purged after the test
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        run = ScoringRun.objects.filter(series=series).first()
        busy = JobRecord.objects.filter(state=JobState.RUNNING).exists()
        if run is not None and run.status == "done" and not busy:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the worker did not finish scoring series {series.pk}")


def scored_series(
    site, *, slices: int = 5, rows: int = 64, columns: int = 64, thread: bool = False
) -> Series:
    """Ingest ``slices`` MR slices and give the series a finished run with a motion and a
    ghosting finding on every slice (masks at ``BOXES``), series index 42. ``thread``: ingest in
    another thread (a browser test's thread runs Playwright's event loop)."""

    def ingest() -> None:
        files = [to_bytes(mr_dataset(i, rows=rows, columns=columns)) for i in range(1, slices + 1)]
        series_ingest(site=site, files=files, source="upload")

    if thread:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(ingest).result()
    else:
        ingest()
    series = Series.objects.get(site=site, modality="MR")
    _let_real_scoring_finish(series)
    model, _ = ModelVersion.objects.get_or_create(
        sha256="f" * 64,
        defaults={"name": "review-test", "version": "t1", "weights_key": "-", "classes": []},
    )
    run = ScoringRun.objects.create(
        series=series, site=site, model_version=model, status="done", suitability=0.42,
        nondiagnostic=True, reason="motion over 30 % of the head",
    )  # fmt: skip
    for instance in series.instances.order_by("instance_number"):
        InstanceScore.objects.create(
            run=run, instance=instance, suitability=0.42, nondiagnostic=True, reason="motion"
        )
        for artifact, box in BOXES.items():
            mask = box_mask(rows, columns, box)
            key = mask_key(
                site_id=site.pk, run_id=str(run.pk), sop_uid=instance.sop_uid, artifact=artifact
            )
            mask_put(key, mask)
            Finding.objects.create(
                run=run, instance=instance, site=site, artifact_type=artifact, mask_key=key,
                area_px=int(mask.sum()), area_fraction=float(mask.mean()), head_fraction=0.3,
                confidence=0.8, advice=f"advice for {artifact}",
            )  # fmt: skip
    Series.objects.filter(pk=series.pk).update(
        current_run=run, status=SeriesStatus.SCORED, suitability=0.42
    )
    series.refresh_from_db()
    return series
