"""AI assistance: re-run the deployed model on one slice, and keep what the reader's clicks
point at.

The model takes no prompts, so hints act after inference: with hint clicks, each type keeps only
the connected parts of the model's mask that contain a click or lie within ``HINT_RADIUS_PX``
of one; without hints the whole mask is offered.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence

import numpy as np
import pydicom
from numpy.typing import NDArray

from backend.storage.store import store_get
from backend.studies.models import Instance

HINT_RADIUS_PX = 8


def slice_model_masks(*, instance_id: uuid.UUID | str) -> dict[str, NDArray[np.uint8]]:
    """The deployed model's masks for one instance (the cached pipeline), by type: on its first
    frame, the one an annotation page shows, for a multi-frame instance."""
    from backend.scoring.services import model_version_deployed, model_weights_local
    from ml.pipeline import frame_pixels, get_pipeline

    instance = Instance.objects.get(pk=instance_id)
    ds = pydicom.dcmread(io.BytesIO(store_get(instance.storage_key)))
    pipeline = get_pipeline(model_weights_local(model_version_deployed()))
    result = pipeline.score_datasets([ds], images=[frame_pixels(ds)[0]], frames=[0])
    return {name: result.masks[0, k] for k, name in enumerate(result.classes)}


def keep_hinted(mask: NDArray[np.generic], hints: Sequence[tuple[int, int]]) -> NDArray[np.uint8]:
    """The connected components (8-connected) of ``mask`` within ``HINT_RADIUS_PX`` of a hint
    (row, column); all of ``mask`` when there are no hints."""
    from scipy import ndimage

    binary = np.asarray(mask) > 0
    if not hints:
        return binary.astype(np.uint8)
    labels, _ = ndimage.label(binary, structure=np.ones((3, 3)))
    near = np.zeros_like(binary)
    rows, cols = np.ogrid[: binary.shape[0], : binary.shape[1]]
    for r, c in hints:
        near |= (rows - r) ** 2 + (cols - c) ** 2 <= HINT_RADIUS_PX**2
    keep = np.unique(labels[near & binary])
    return np.isin(labels, keep[keep > 0]).astype(np.uint8)
