"""In Chromium: a radiologist opens a scored series from the worklist in the Cornerstone3D viewer
(over our DICOMweb), scrolls, changes the window, toggles an artifact type's overlay and sees the
pixels change where its mask is, reviews findings (accept, correct with the brush) and finds the
review still there after a reload; another site's series is not reachable by URL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from backend.ingest.services import series_ingest
from backend.review.models import FindingReview
from backend.scoring.masks import mask_get
from backend.scoring.models import Finding, SeriesRegionOfInterest
from backend.studies.models import Series
from tests.conftest import PASSWORD
from tests.deid.builders import mr_dataset, to_bytes
from tests.review.helpers import BOXES, scored_series

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]

# What the viewport shows, as RGB rows (CSS pixels = canvas pixels at devicePixelRatio 1): the
# Cornerstone3D canvas with the viewer's mask overlay canvas over it, composited in page order.
COMPOSITE = """
  const layers = [...document.querySelectorAll('#viewport canvas')];
  const copy = document.createElement('canvas');
  copy.width = layers[0].width; copy.height = layers[0].height;
  const ctx = copy.getContext('2d');
  for (const layer of layers) ctx.drawImage(layer, 0, 0, copy.width, copy.height);
  const data = ctx.getImageData(0, 0, copy.width, copy.height).data;
"""

CANVAS_RGB = f"""() => {{
  {COMPOSITE}
  const out = [];
  for (let i = 0; i < data.length; i += 4) out.push(data[i], data[i + 1], data[i + 2]);
  return {{width: copy.width, height: copy.height, rgb: out}};
}}"""

CANVAS_SUM = f"""() => {{
  {COMPOSITE}
  let sum = 0;
  for (let i = 0; i < data.length; i += 4) sum += data[i];
  return sum;
}}"""


def _canvas(page) -> np.ndarray:
    got = page.evaluate(CANVAS_RGB)
    return np.array(got["rgb"], dtype=np.int16).reshape(got["height"], got["width"], 3)


def _box_on_canvas(page, box, size=64) -> tuple[slice, slice]:
    """The canvas rows and columns of a mask box (given on a ``size`` grid), shrunk by two
    canvas pixels on each side so interpolation at the border does not count."""
    x0, y0, x1, y1 = (float(v) for v in page.get_attribute("#viewer", "data-image-rect").split(","))
    r0, r1, c0, c1 = box
    sx, sy = (x1 - x0) / size, (y1 - y0) / size
    return (
        slice(int(y0 + r0 * sy) + 2, int(y0 + r1 * sy) - 2),
        slice(int(x0 + c0 * sx) + 2, int(x0 + c1 * sx) - 2),
    )


def _sign_in(page, server: str, username: str, next_url: str) -> None:
    page.goto(f"http://{server}/accounts/login/?next={next_url}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def _open_viewer(page, server, series) -> None:
    page.goto(f"http://{server}/series/{series.pk}/")
    page.wait_for_selector("#viewer-status[data-state=ready]", timeout=30_000)
    page.wait_for_selector("#viewer[data-overlays-loaded='10']", timeout=30_000)
    page.wait_for_selector("#viewer[data-image-rect]", timeout=10_000)


def test_a_series_opens_scrolls_and_changes_window(page, asgi_server, radiologist_a, site_a):
    series = scored_series(site_a, slices=5, thread=True)
    _sign_in(page, asgi_server, "rad_a", "/")
    page.wait_for_selector("#worklist tbody tr[data-series-id] a", timeout=10_000)
    page.click("#worklist tbody tr[data-series-id] a")
    page.wait_for_url(f"http://{asgi_server}/series/{series.pk}/")
    page.wait_for_selector("#viewer-status[data-state=ready]", timeout=30_000)
    assert page.get_attribute("#viewer", "data-slice") == "2"  # opens in the middle
    assert "3.0 T" in page.inner_text("#headers") and "130 Hz/px" in page.inner_text("#headers")
    page.wait_for_function(f"({CANVAS_SUM})() > 0", timeout=10_000)
    page.wait_for_selector("#viewer[data-scored='5']", timeout=30_000)
    assert page.locator("#strip .strip-cell").count() == 5
    assert "42/100" in page.inner_text("#series-index")
    findings = page.inner_text("#findings")
    assert findings.startswith("Index 42/100")
    assert (
        "motion" in findings and "advice for motion" in findings and "confidence 80 %" in findings
    )
    drawn = page.evaluate(CANVAS_SUM)

    page.keyboard.press("ArrowDown")
    page.wait_for_function("document.querySelector('#viewer').dataset.slice === '3'")
    assert page.inner_text("#slice-label") == "4 / 5"
    page.click("#strip .strip-cell[data-position='0']")
    page.wait_for_function("document.querySelector('#viewer').dataset.slice === '0'")

    page.select_option("#preset", "wide")
    page.wait_for_function(f"({CANVAS_SUM})() !== {drawn}", timeout=10_000)

    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    assert "draw the region of interest" in page.inner_text("#help")
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()


def test_an_overlay_toggles_where_its_mask_is(page, asgi_server, radiologist_a, site_a):
    series = scored_series(site_a, slices=5, thread=True)
    _sign_in(page, asgi_server, "rad_a", f"/series/{series.pk}/")
    _open_viewer(page, asgi_server, series)
    assert page.locator("#overlays .overlay-row").count() == 2  # motion and ghosting
    page.wait_for_timeout(300)
    with_both = _canvas(page)
    motion_rows, motion_cols = _box_on_canvas(page, BOXES["motion"])
    ghost_rows, ghost_cols = _box_on_canvas(page, BOXES["ghosting"])

    page.uncheck("input.overlay-toggle[data-type=motion]")
    page.wait_for_function(
        "document.querySelector('#viewer').dataset.overlaysVisible === 'ghosting'"
    )
    page.wait_for_timeout(300)
    without_motion = _canvas(page)
    changed = np.abs(with_both - without_motion).sum(axis=2) > 8
    assert changed[motion_rows, motion_cols].mean() > 0.9  # the motion mask's pixels changed
    assert changed[ghost_rows, ghost_cols].mean() < 0.05  # the ghosting mask's did not
    # The motion overlay is drawn in the product's motion colour: red dominates where it was.
    inside = with_both[motion_rows, motion_cols].reshape(-1, 3).mean(axis=0)
    assert inside[0] > inside[1] + 20 and inside[0] > inside[2] + 20

    page.check("input.overlay-toggle[data-type=motion]")
    page.wait_for_function(
        "document.querySelector('#viewer').dataset.overlaysVisible === 'motion,ghosting'"
    )
    page.wait_for_timeout(300)
    again = _canvas(page)
    assert (np.abs(again - with_both).sum(axis=2) > 8)[motion_rows, motion_cols].mean() < 0.05

    page.keyboard.press("2")  # the second type's shortcut: ghosting off
    page.wait_for_function("document.querySelector('#viewer').dataset.overlaysVisible === 'motion'")


def test_a_finding_is_accepted_and_a_mask_corrected_with_the_brush(
    page, asgi_server, radiologist_a, site_a
):
    series = scored_series(site_a, slices=3, rows=64, columns=64, thread=True)
    _sign_in(page, asgi_server, "rad_a", f"/series/{series.pk}/")
    page.wait_for_selector("#viewer-status[data-state=ready]", timeout=30_000)
    page.wait_for_selector("#viewer[data-overlays-loaded='6']", timeout=30_000)
    slice_sop = series.instances.order_by("instance_number")[1].sop_uid
    ghosting = Finding.objects.get(
        run=series.current_run, instance__sop_uid=slice_sop, artifact_type="ghosting"
    )
    motion = Finding.objects.get(
        run=series.current_run, instance__sop_uid=slice_sop, artifact_type="motion"
    )

    page.click(f".finding[data-finding-id='{ghosting.pk}'] button.act-accept")
    page.wait_for_selector(f".finding[data-finding-id='{ghosting.pk}'][data-state=accepted]")
    page.reload()
    page.wait_for_selector("#viewer[data-scored='3']", timeout=30_000)
    item = page.locator(f".finding[data-finding-id='{ghosting.pk}']")
    assert item.get_attribute("data-state") == "accepted"
    assert "accepted by rad_a" in item.inner_text()
    page.wait_for_selector("#viewer[data-overlays-loaded='6']", timeout=30_000)

    page.click(f".finding[data-finding-id='{motion.pk}'] button.act-correct")
    page.wait_for_selector(f"#viewer[data-editing='{motion.pk}'][data-edit-tool=brush]")
    # Paint a stroke across the lower left, far from the model's motion mask (rows 8-28).
    x0, y0, x1, y1 = (float(v) for v in page.get_attribute("#viewer", "data-image-rect").split(","))
    box = page.locator("#viewport").bounding_box()
    assert box is not None
    row = y0 + (y1 - y0) * 50 / 64
    page.mouse.move(box["x"] + x0 + (x1 - x0) * 6 / 64, box["y"] + row)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(box["x"] + x0 + (x1 - x0) * (6 + 2 * step) / 64, box["y"] + row)
    page.mouse.up()
    page.click("#edit-save")
    page.wait_for_selector(f".finding[data-finding-id='{motion.pk}'][data-state=corrected]")

    review = FindingReview.objects.get(finding=motion)
    assert review.action == "correct" and review.user.username == "rad_a"
    corrected = mask_get(review.mask_key)
    original = mask_get(motion.mask_key)
    assert corrected[48:53, 8:24].mean() > 0.8  # the brush stroke is in the stored mask
    assert original[48:53, 8:24].sum() == 0  # and the model's mask is untouched
    assert np.array_equal(corrected[8:28, 8:40], original[8:28, 8:40])  # its area is kept

    page.reload()
    page.wait_for_selector("#viewer[data-overlays-loaded='6']", timeout=30_000)
    assert page.get_attribute(f".finding[data-finding-id='{motion.pk}']", "data-state") == (
        "corrected"
    )
    page.uncheck("input.overlay-toggle[data-type=ghosting]")
    page.wait_for_timeout(300)
    with_motion = _canvas(page)
    page.uncheck("input.overlay-toggle[data-type=motion]")
    page.wait_for_timeout(300)
    without = _canvas(page)
    rows, cols = _box_on_canvas(page, (48, 53, 8, 24))
    # After the reload the corrected version is what the overlay shows.
    assert (np.abs(with_motion - without).sum(axis=2) > 8)[rows, cols].mean() > 0.8


def test_a_rejected_finding_is_no_longer_drawn(page, asgi_server, radiologist_a, site_a):
    """Rejecting the model's ghosting on the slice on screen takes its mask off the image at
    once and after a reload; the motion mask stays, and the rejected entry stays listed."""
    series = scored_series(site_a, slices=3, rows=64, columns=64, thread=True)
    _sign_in(page, asgi_server, "rad_a", f"/series/{series.pk}/")
    page.wait_for_selector("#viewer-status[data-state=ready]", timeout=30_000)
    page.wait_for_selector("#viewer[data-overlays-loaded='6']", timeout=30_000)
    page.wait_for_selector("#viewer[data-image-rect]", timeout=10_000)
    slice_sop = series.instances.order_by("instance_number")[1].sop_uid
    ghosting = Finding.objects.get(
        run=series.current_run, instance__sop_uid=slice_sop, artifact_type="ghosting"
    )
    page.wait_for_timeout(300)
    before = _canvas(page)
    ghost_rows, ghost_cols = _box_on_canvas(page, BOXES["ghosting"])
    motion_rows, motion_cols = _box_on_canvas(page, BOXES["motion"])

    page.click(f".finding[data-finding-id='{ghosting.pk}'] button.act-reject")
    page.wait_for_selector(f".finding[data-finding-id='{ghosting.pk}'][data-state=rejected]")
    page.wait_for_selector("#viewer[data-overlays-loaded='5']", timeout=30_000)
    page.wait_for_timeout(300)
    after = _canvas(page)
    changed = np.abs(before - after).sum(axis=2) > 8
    assert changed[ghost_rows, ghost_cols].mean() > 0.9  # the ghosting overlay is gone
    assert changed[motion_rows, motion_cols].mean() < 0.05  # the motion overlay is not
    assert Finding.objects.get(pk=ghosting.pk).review_state == "rejected"

    page.reload()
    page.wait_for_selector("#viewer[data-overlays-loaded='5']", timeout=30_000)
    page.wait_for_timeout(300)
    reloaded = _canvas(page)
    assert (np.abs(reloaded - after).sum(axis=2) > 8)[ghost_rows, ghost_cols].mean() < 0.05
    item = page.locator(f".finding[data-finding-id='{ghosting.pk}']")
    assert "rejected by rad_a" in item.inner_text()

    # Accepted again, it is drawn again.
    page.click(f".finding[data-finding-id='{ghosting.pk}'] button.act-accept")
    page.wait_for_selector("#viewer[data-overlays-loaded='6']", timeout=30_000)


def test_a_verdict_and_a_region_of_interest_are_stored_and_shown_to_colleagues(
    page, browser, asgi_server, radiologist_a, admin_a, site_a
):
    series = scored_series(site_a, slices=3, thread=True)
    _sign_in(page, asgi_server, "rad_a", f"/series/{series.pk}/")
    page.wait_for_selector("#viewer[data-overlays-loaded='6']", timeout=30_000)
    page.wait_for_selector("#viewer[data-image-rect]", timeout=10_000)

    page.fill("#verdict-comment", "motion, repeat with PROPELLER")
    page.click("#verdict-nondiagnostic")
    page.wait_for_selector("#verdict-badge[data-verdict=nondiagnostic]")
    assert "motion, repeat with PROPELLER" in page.inner_text("#verdict-history")

    # Draw a region over the upper half of the image (image pixels: columns 4-60, rows 4-30).
    x0, y0, x1, y1 = (float(v) for v in page.get_attribute("#viewer", "data-image-rect").split(","))
    box = page.locator("#viewport").bounding_box()
    assert box is not None

    def at(col: float, row: float) -> tuple[float, float]:
        # The centre of pixel (row, col) on the page.
        return (
            box["x"] + x0 + (x1 - x0) * (col + 0.5) / 64,
            box["y"] + y0 + (y1 - y0) * (row + 0.5) / 64,
        )

    page.click("#roi-draw")
    page.wait_for_selector("#viewer[data-roi-drawing=true]")
    for col, row in ((4, 4), (60, 4), (60, 30), (4, 30)):
        page.mouse.click(*at(col, row))
    page.keyboard.press("Enter")
    page.wait_for_selector("#roi-index:not([hidden])", timeout=10_000)
    assert page.get_attribute("#viewer", "data-roi-drawing") is None
    roi = SeriesRegionOfInterest.objects.get(series=series, cleared_at__isnull=True)
    assert roi.set_by.username == "rad_a" and len(roi.polygon) == 4
    for (col, row), expected in zip(roi.polygon, ((4, 4), (60, 4), (60, 30), (4, 30)), strict=True):
        assert abs(col - expected[0]) < 0.6 and abs(row - expected[1]) < 0.6
    result = page.evaluate(f"fetch('/api/series/{series.pk}/result/').then(r => r.json())")
    assert f"Region of interest {result['roi_suitability_index']}/100" in page.inner_text(
        "#roi-index"
    )
    assert page.locator("#roi-layer polygon.roi-saved").count() == 1

    # A colleague of the site sees both, on a laptop-sized screen.
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    other = context.new_page()
    _sign_in(other, asgi_server, "admin_a", f"/series/{series.pk}/")
    other.wait_for_selector("#verdict-badge[data-verdict=nondiagnostic]", timeout=30_000)
    assert "rad_a" in other.inner_text("#verdict-history")
    other.wait_for_selector("#roi-layer polygon.roi-saved", timeout=10_000)
    assert other.locator("#viewport").is_visible() and other.locator("#findings").is_visible()
    scroll_width = other.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= 1366  # nothing runs off the side of a laptop screen
    context.close()

    page.click("#roi-clear")
    page.wait_for_selector("#roi-index[hidden]", state="attached", timeout=10_000)
    assert not SeriesRegionOfInterest.objects.filter(
        series=series, cleared_at__isnull=True
    ).exists()


def test_a_series_that_cannot_load_says_why(page, asgi_server, radiologist_a, site_a):
    series = scored_series(site_a, slices=1, thread=True)
    # Its images are gone from the store (a broken disk, a purge): the metadata still lists them.
    from backend.storage.store import store_delete

    for instance in series.instances.all():
        store_delete(instance.storage_key)
    _sign_in(page, asgi_server, "rad_a", f"/series/{series.pk}/")
    page.wait_for_selector("#viewer-status[data-state=error]", timeout=30_000)
    assert "Could not load the series: the server could not read its images" in (
        page.inner_text("#viewer-status")
    )
    assert page.locator("#viewport-message").is_visible()


def test_another_sites_series_is_not_reachable_by_url(page, asgi_server, radiologist_b, site_a):
    with ThreadPoolExecutor(1) as pool:
        pool.submit(
            series_ingest, site=site_a, files=[to_bytes(mr_dataset(1))], source="upload"
        ).result()
    series = Series.objects.get(site=site_a, modality="MR")
    _sign_in(page, asgi_server, "rad_b", f"/series/{series.pk}/")
    response = page.goto(f"http://{asgi_server}/series/{series.pk}/")
    assert response is not None and response.status == 404
    result = page.goto(f"http://{asgi_server}/api/series/{series.pk}/result/")
    assert result is not None and result.status == 404


def test_the_frames_of_an_enhanced_mr_image_are_slices_of_the_stack(
    page, asgi_server, radiologist_a, site_a
):
    # A classic slice and a 3-frame Enhanced MR image of one series: four positions, each frame
    # fetched on its own over WADO-RS (frames/N) and drawn as itself, each with its own result.
    from pydicom.uid import generate_uid

    from tests.deid.builders import enhanced_mr_dataset

    enhanced = enhanced_mr_dataset(frames=3, rows=64, columns=64)
    enhanced.SOPInstanceUID, enhanced.InstanceNumber = generate_uid(), 2
    frames = np.zeros((3, 64, 64), np.uint16)
    for k in range(3):  # a bright square in a different place on each frame
        frames[k, 8 + 16 * k : 24 + 16 * k, 8 + 16 * k : 24 + 16 * k] = 1000
    enhanced.PixelData = frames.tobytes()
    for k, group in enumerate(enhanced.PerFrameFunctionalGroupsSequence):
        group.MREchoSequence[0].EffectiveEchoTime = 90.0 + 10 * k  # each frame its own TE
    files = [to_bytes(mr_dataset(1, rows=64, columns=64)), to_bytes(enhanced)]
    with ThreadPoolExecutor(1) as pool:
        outcomes = pool.submit(series_ingest, site=site_a, files=files, source="upload").result()
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    series = Series.objects.get(site=site_a, modality="MR")
    from backend.scoring.services import series_score
    from tests.review.helpers import _let_real_scoring_finish

    _let_real_scoring_finish(series)  # a worker started by an earlier test may be on it
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(series_score, series_id=series.pk).result()
    scores = {
        (s.instance.instance_number, s.frame): round(s.suitability * 100)
        for s in run.instance_scores.select_related("instance")
    }
    assert sorted(scores) == [(1, 1), (2, 1), (2, 2), (2, 3)]
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    _sign_in(page, asgi_server, "rad_a", f"/series/{series.pk}/")
    page.wait_for_selector("#viewer-status[data-state=ready]", timeout=30_000)
    assert page.inner_text("#viewer-status").startswith("4 images")
    assert page.get_attribute("#viewer", "data-slice") == "2"  # the middle: frame 2
    assert page.inner_text("#slice-label") == "3 / 4"
    page.wait_for_function(f"({CANVAS_SUM})() > 0", timeout=10_000)
    shown = {2: _canvas(page)}
    # The header panel shows the frame's own values (TR shared, TE per frame).
    assert "4000 / 100.0 ms" in page.inner_text("#headers")
    for key, position in (("ArrowDown", 3), ("ArrowUp", 2), ("ArrowUp", 1)):
        page.keyboard.press(key)
        page.wait_for_function(
            f"document.querySelector('#viewer').dataset.slice === '{position}'", timeout=10_000
        )
        page.wait_for_timeout(300)
        shown[position] = _canvas(page)
        assert f"4000 / {90 + 10 * (position - 1)}.0 ms" in page.inner_text("#headers")
    # The strip and the findings panel: each frame's position shows that frame's index.
    page.wait_for_selector("#viewer[data-scored='4']", timeout=30_000)
    cells = [page.inner_text(f"#strip .strip-cell[data-position='{p}']") for p in range(4)]
    expected = [scores[(1, 1)], scores[(2, 1)], scores[(2, 2)], scores[(2, 3)]]
    assert [int(c.split()[0]) for c in cells] == expected
    for position in (1, 3):
        page.click(f"#strip .strip-cell[data-position='{position}']")
        page.wait_for_function(
            f"document.querySelector('#viewer').dataset.slice === '{position}'", timeout=10_000
        )
        assert page.inner_text("#findings").startswith(f"Index {expected[position]}/100")
    enhanced_uid = outcomes[1].sop_uid
    for frame in (1, 2, 3):
        assert any(f"/instances/{enhanced_uid}/frames/{frame}" in url for url in asked), frame
    # Each frame drawn as itself: its square where the others have none.
    assert np.abs(shown[1] - shown[2]).sum() > 0 and np.abs(shown[2] - shown[3]).sum() > 0
    assert np.abs(shown[1] - shown[3]).sum() > 0
