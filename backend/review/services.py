"""Writes of the review: one history row per action, the finding's state, a corrected mask as a
new version in the encrypted store, and a ``review.changed`` event to the site's users."""

from __future__ import annotations

import io
import warnings

import numpy as np
from django.db import transaction
from PIL import Image

from backend.accounts.models import Role, User
from backend.accounts.selectors import AnyUser, user_has_role
from backend.realtime.services import event_publish
from backend.review.models import (
    FindingAction,
    FindingReview,
    SeriesReview,
    SeriesVerdict,
)
from backend.scoring.masks import mask_key, mask_put
from backend.scoring.models import Finding, ReviewState
from backend.studies.models import Series

REVIEWER_ROLES = (Role.RADIOLOGIST, Role.SITE_ADMIN)
MAX_MASK_PNG_BYTES = 4 * 1024 * 1024

_STATE_OF = {
    FindingAction.ACCEPT: ReviewState.ACCEPTED,
    FindingAction.CORRECT: ReviewState.CORRECTED,
    FindingAction.REJECT: ReviewState.REJECTED,
}


class ReviewNotAllowed(Exception):
    """The caller sees the site but its role does not review (an annotator, an operator)."""


class BadMask(ValueError):
    """The uploaded mask is not a PNG on the instance's pixel grid."""


def _require_reviewer(user: AnyUser, site_id: int) -> User:
    if not isinstance(user, User) or not user_has_role(
        user=user, site_id=site_id, roles=REVIEWER_ROLES
    ):
        raise ReviewNotAllowed("Only the site's radiologists and administrators review findings.")
    return user


def mask_decode(*, png: bytes, rows: int, columns: int) -> np.ndarray:
    """A PNG upload as a uint8 0/1 (rows, columns) mask; anything else is ``BadMask``.

    The size is read from the header before any pixel is decoded, so a small file that claims a
    huge image costs nothing."""
    if len(png) > MAX_MASK_PNG_BYTES:
        raise BadMask(f"the mask PNG is larger than {MAX_MASK_PNG_BYTES} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(png))
            if image.format != "PNG":
                raise BadMask("the mask is not a PNG")
            if image.size != (columns, rows):
                raise BadMask(
                    f"the mask is {image.size[0]}×{image.size[1]}, the image {columns}×{rows}"
                )
            pixels = np.asarray(image.convert("L"))
    except BadMask:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise BadMask(f"the mask is not a readable PNG ({type(exc).__name__})") from None
    return (pixels > 127).astype(np.uint8)


def _corrected_key(finding: Finding, version: int) -> str:
    """Beside the model's mask (:func:`backend.scoring.masks.mask_key`), versioned."""
    key = mask_key(
        site_id=finding.site_id,
        run_id=str(finding.run_id),
        sop_uid=finding.instance.sop_uid,
        artifact=finding.artifact_type,
        frame=finding.frame if finding.instance.frame_count > 1 else None,
    )
    return key.removesuffix(".png") + f".v{version}.png"


@transaction.atomic
def finding_review_create(
    *,
    user: AnyUser,
    finding: Finding,
    action: FindingAction | str,
    comment: str = "",
    mask_png: bytes | None = None,
) -> FindingReview:
    """Record ``user``'s ``action`` on ``finding`` (already scoped to the caller's sites).

    ``correct`` needs ``mask_png``: it is stored as a new version beside the model's original
    (version 1), which stays untouched."""
    reviewer = _require_reviewer(user, finding.site_id)
    action = FindingAction(action)
    # One reviewer at a time per finding: the version number below must not race.
    finding = (
        Finding.objects.select_for_update(of=("self",))
        .select_related("instance__series")
        .get(pk=finding.pk)
    )
    review = FindingReview(
        finding=finding, site_id=finding.site_id, user=reviewer, action=action, comment=comment
    )
    if action == FindingAction.CORRECT:
        if mask_png is None:
            raise BadMask("a correction needs the corrected mask")
        mask = mask_decode(
            png=mask_png, rows=finding.instance.rows, columns=finding.instance.columns
        )
        version = 2 + FindingReview.objects.filter(finding=finding).exclude(mask_key="").count()
        review.mask_key = _corrected_key(finding, version)
        review.mask_area_px = int(mask.sum())
        mask_put(review.mask_key, mask)
    elif mask_png is not None:
        raise BadMask("only a correction carries a mask")
    review.save()
    Finding.objects.filter(pk=finding.pk).update(review_state=_STATE_OF[action])
    series = finding.instance.series
    _publish(
        site_id=finding.site_id,
        data={
            "series_id": str(series.pk),
            "finding_id": finding.pk,
            "action": str(action),
            "review_state": str(_STATE_OF[action]),
            "by": reviewer.get_username(),
        },
    )
    return review


@transaction.atomic
def series_review_create(
    *, user: AnyUser, series: Series, verdict: SeriesVerdict | str, comment: str = ""
) -> SeriesReview:
    """Mark ``series`` (already scoped) diagnostic or non-diagnostic; the latest row counts."""
    reviewer = _require_reviewer(user, series.site_id)
    review = SeriesReview.objects.create(
        series=series,
        site_id=series.site_id,
        user=reviewer,
        verdict=SeriesVerdict(verdict),
        comment=comment,
    )
    _publish(
        site_id=series.site_id,
        data={
            "series_id": str(series.pk),
            "verdict": review.verdict,
            "by": reviewer.get_username(),
        },
    )
    return review


def _publish(*, site_id: int, data: dict[str, object]) -> None:
    # Ids, states and the reviewer's user name only: nothing about the patient.
    transaction.on_commit(lambda: event_publish(site_id=site_id, kind="review.changed", data=data))
