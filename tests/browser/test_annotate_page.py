"""In Chromium: a reader paints a mask on the annotate page (autosaved as a versioned reading),
another reader disagrees, and the lead sees the painted mask on the adjudication page and picks
it."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from annotation.models import Adjudication, Annotation, Assignment
from annotation.services import annotation_save, campaign_create
from backend.ingest.services import series_ingest
from backend.scoring.masks import mask_get
from backend.studies.models import Series
from tests.conftest import PASSWORD, _persona
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


def _sign_in(page, server: str, username: str, next_url: str) -> None:
    page.goto(f"http://{server}/accounts/login/?next={next_url}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def test_a_reader_paints_a_mask_and_the_adjudicator_sees_it(page, asgi_server, site_a, annotator_a):
    with ThreadPoolExecutor(
        1
    ) as pool:  # ingest publishes events; this thread runs Playwright's loop
        pool.submit(
            series_ingest,
            site=site_a,
            files=[to_bytes(mr_dataset(i, rows=64, columns=64)) for i in range(1, 4)],
            source="upload",
        ).result()
    assert Series.objects.filter(site=site_a).count() == 1
    lead = _persona("lead_pw", site_a, "annotation_lead")
    reader2 = _persona("reader2_pw", site_a, "annotator")
    campaign = campaign_create(
        user=lead.user,
        site_id=site_a.pk,
        name="Motion campaign",
        artifact_types=["motion", "noise"],
        readers_per_image=2,
        blinded=True,
        instructions="Paint every motion ghost.",
    )

    _sign_in(page, asgi_server, "annotator_a", "/annotate/")
    page.wait_for_selector("#queue-progress")
    assert page.inner_text("#queue-progress") == "0 of 1 series read"
    page.click("#resume")
    page.wait_for_selector("#annotate[data-state=ready]", timeout=30_000)
    assert page.get_attribute("#annotate", "data-active-type") == "motion"
    assert page.get_attribute("#annotate", "data-tool") == "brush"
    assert page.is_disabled("#accept-model")  # blinded
    page.wait_for_function("document.querySelector('#annotate').dataset.imageRect")
    x0, y0, x1, y1 = (
        float(v) for v in page.get_attribute("#annotate", "data-image-rect").split(",")
    )
    box = page.locator("#viewport").bounding_box()
    assert box is not None
    row = box["y"] + y0 + (y1 - y0) * 20 / 64
    page.mouse.move(box["x"] + x0 + (x1 - x0) * 10 / 64, row)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(box["x"] + x0 + (x1 - x0) * (10 + 3 * step) / 64, row)
    page.mouse.up()
    page.keyboard.press("d")  # diagnostic: no
    page.wait_for_selector("#annotate[data-saved]", timeout=15_000)
    page.wait_for_selector("#ann-save[data-state=saved]", timeout=15_000)

    reading = Annotation.objects.filter(created_by=annotator_a.user).latest("version")
    painted = mask_get(reading.masks["motion"])
    assert painted[20, 12:38].all() and painted[40:].sum() == 0  # a stroke, not a flood
    assert reading.source == "empty" and reading.time_spent_ms > 0

    # Undo takes the stroke away again (and is saved as a new version).
    page.keyboard.press("Control+z")
    page.wait_for_function(
        "Number(document.querySelector('#annotate').dataset.saved) >= 2", timeout=15_000
    )
    latest = Annotation.objects.filter(created_by=annotator_a.user).latest("version")
    assert latest.version > reading.version and "motion" not in latest.masks
    page.keyboard.press("Control+y")
    page.wait_for_function(
        "Number(document.querySelector('#annotate').dataset.saved) >= 3", timeout=15_000
    )

    # Polygon on the second type: four corners in the lower left, Enter closes and fills it.
    def at(col: float, row: float) -> tuple[float, float]:
        return box["x"] + x0 + (x1 - x0) * col / 64, box["y"] + y0 + (y1 - y0) * row / 64

    page.keyboard.press("2")
    page.keyboard.press("p")
    assert page.get_attribute("#annotate", "data-active-type") == "noise"
    for col, row in ((4, 44), (20, 44), (20, 60), (4, 60)):
        page.mouse.click(*at(col, row))
    page.keyboard.press("Enter")
    page.wait_for_function(
        "Number(document.querySelector('#annotate').dataset.saved) >= 4", timeout=15_000
    )
    polygon = Annotation.objects.filter(created_by=annotator_a.user).latest("version")
    noise = mask_get(polygon.masks["noise"])
    assert noise[46:58, 6:18].all() and noise[:40].sum() == 0
    assert 200 < noise.sum() < 300  # the 16 x 16 square, give or take its edge pixels
    assert np.array_equal(mask_get(polygon.masks["motion"]), painted)  # the redo is kept

    other = Assignment.objects.get(campaign=campaign, reader=reader2.user)
    theirs = np.zeros((64, 64), np.uint8)
    theirs[40:50, 40:50] = 1
    annotation_save(
        user=reader2.user,
        assignment=other,
        instance_id=reading.instance_id,
        masks={"motion": theirs},
        diagnostic=True,
    )

    page.context.clear_cookies()
    _sign_in(page, asgi_server, "lead_pw", f"/campaigns/{campaign.pk}/")
    page.wait_for_selector(f"#disagreements tr[data-instance-id='{reading.instance_id}'] a")
    page.click(f"#disagreements tr[data-instance-id='{reading.instance_id}'] a")
    page.wait_for_selector("#annotate[data-state=ready]", timeout=30_000)
    mine = page.locator("#readers figure[data-reader=annotator_a]")
    assert int(mine.get_attribute("data-pixels")) == int(painted.sum() + noise.sum())
    assert int(page.get_attribute("#readers figure[data-reader=reader2_pw]", "data-pixels")) == 100
    assert "diagnostic label" in page.inner_text("#reasons")
    shots = os.environ.get("ARTISCAN_SCREENSHOT_DIR")
    if shots:
        page.screenshot(path=str(Path(shots) / "annotate.png"), full_page=True)
    page.click("#pick button[data-pick=annotator_a]")
    page.wait_for_selector("#annotate[data-adjudicated='1']", timeout=15_000)
    adjudication = Adjudication.objects.get(campaign=campaign)
    assert adjudication.method == "pick" and adjudication.adjudicator == lead.user
    assert np.array_equal(mask_get(adjudication.masks["motion"]), painted)
