"""WADO-RS metadata (DICOM JSON, PS3.18 F.2, without bulk data), kept per instance.

Decrypting and parsing every file of a series at each request cost the viewer over a second before
its first image. The JSON of an instance depends only on its stored (de-identified, immutable)
file, so it is made once, at ingest, and kept as the exact text the endpoint answers; instances
stored before it was kept get theirs at their first request.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pydicom

from backend.storage.conf import storage_config
from backend.storage.store import store_exists, store_get
from backend.studies.models import Instance, InstanceMetadata

logger = logging.getLogger(__name__)


def metadata_json_of(data: bytes) -> str:
    """The DICOM JSON of one Part 10 file, pixel data left out (fetched through ``/frames``)."""
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return json.dumps(ds.to_json_dict(bulk_data_threshold=2**20))


def instance_metadata_create(*, files: Iterable[tuple[Instance, bytes]]) -> None:
    """Keep the metadata of newly stored instances (``files``: each row with its clean bytes).

    A file whose JSON cannot be made is left without: its first request will say why, as before.
    """
    rows = []
    for instance, data in files:
        try:
            rows.append(InstanceMetadata(instance=instance, dicom_json=metadata_json_of(data)))
        except Exception:
            logger.warning("no metadata kept for instance %s", instance.pk, exc_info=True)
    InstanceMetadata.objects.bulk_create(rows, ignore_conflicts=True)


class StoredFileMissing(Exception):
    """An instance's file is gone from the store (a broken disk, a purge)."""


def _check_stored(keys: Sequence[str]) -> None:
    # Metadata of images that cannot be fetched would leave a viewer waiting for frames that
    # never come: as when every file was parsed, a series whose files are gone is an error. A
    # stat each on a local disk; on S3 a HEAD each, several at a time (a pool costs more than
    # the stats themselves locally).
    if len(keys) > 1 and storage_config() is not None:
        with ThreadPoolExecutor(min(8, len(keys))) as pool:
            present = list(pool.map(store_exists, keys))
    else:
        present = [store_exists(k) for k in keys]
    if not all(present):
        raise StoredFileMissing(f"{present.count(False)} stored file(s) missing")


def metadata_texts(instances: Sequence[Instance]) -> list[str]:
    """The metadata text of each instance, in order (``instances`` selected with
    ``select_related("metadata")``); made from the stored file and kept where it is missing.

    Raises ``StoredFileMissing`` when a file is gone from the store."""
    texts: list[str] = []
    missing: list[InstanceMetadata] = []
    kept: list[str] = []
    for instance in instances:
        try:
            texts.append(instance.metadata.dicom_json)
            kept.append(instance.storage_key)
        except InstanceMetadata.DoesNotExist:
            if not store_exists(instance.storage_key):
                raise StoredFileMissing("a stored file is missing") from None
            text = metadata_json_of(store_get(instance.storage_key))
            missing.append(InstanceMetadata(instance=instance, dicom_json=text))
            texts.append(text)
    _check_stored(kept)
    if missing:
        # Two first requests at once both make it; the same text, so the loser is dropped.
        InstanceMetadata.objects.bulk_create(missing, ignore_conflicts=True)
    return texts


def metadata_response_body(texts: Sequence[str]) -> bytes:
    """The body ``json.dumps([...])`` would give for the parsed texts, without parsing them."""
    return ("[" + ", ".join(texts) + "]").encode()
