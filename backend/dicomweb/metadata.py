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
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filereader import _at_pixel_data, read_dataset
from pydicom.tag import BaseTag
from pydicom.valuerep import AMBIGUOUS_VR, VR

from backend.config.prepared import PreparedInsert
from backend.storage.conf import storage_config
from backend.storage.store import store_exists, store_get
from backend.studies.models import Instance, InstanceMetadata

logger = logging.getLogger(__name__)


# Inline binary values up to this size (base64) rather than bulk data URIs: no handler is given,
# so every value is inline; the threshold is passed as it always was.
_BULK_THRESHOLD = 2**20


def metadata_json_reference(data: bytes) -> str:
    """The DICOM JSON of one Part 10 file as pydicom makes it: what ``metadata_json_of`` must
    equal byte for byte (the tests compare the two)."""
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return json.dumps(ds.to_json_dict(bulk_data_threshold=_BULK_THRESHOLD))


# The instances of a series share most of their header: converting each element to its JSON
# (decode, validate, build a dict, dump it) was most of the ingest cost of the metadata, so the
# text of each top-level element is kept per process, keyed by everything its conversion reads:
# tag, VR as written, value bytes (a sequence's: all its items), byte order, implicitness and
# the data set's character set. An element whose conversion may read other elements of the data
# set is converted every time, as before, and not kept: an ambiguous VR (US or SS... resolved
# from the pixel representation), a private tag (its VR may come from the private creator), a
# sequence with either in its items. json.dumps of a dict is "{" + ", ".join('"key": ' +
# json.dumps(value)) + "}" (no indent), so joining the texts gives the same string. Bounded: the
# least recently used text goes first, and long values are not kept.
_MEMO_ENTRIES = 8192
_MEMO_MAX_VALUE = 1024  # bytes of raw value: UIDs, dates, positions, text, small sequences
_memo: OrderedDict[tuple[object, ...], str] = OrderedDict()


def _stands_alone(tag: BaseTag, vr: str | None) -> bool:
    """Whether an element's conversion reads nothing but its own bytes (and the memo key)."""
    if tag.is_private:
        return False  # an implicit or UN private VR comes from the private creator
    if vr is None or vr == VR.UN:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return False
    return vr not in AMBIGUOUS_VR and " or " not in vr


def _items_stand_alone(element: DataElement) -> bool:
    """Whether a converted sequence read nothing from its parent but the character set: no
    ambiguous VR (US or SS... resolved from the parent's pixel representation) or private tag
    anywhere in its items."""
    for item in element.value:
        for child in item.values():
            if isinstance(child, RawDataElement) or not _stands_alone(child.tag, None):
                return False
            if child.VR == VR.SQ and not _items_stand_alone(child):
                return False
    return True


def _element_text(ds: pydicom.Dataset, tag: int) -> tuple[DataElement, str]:
    element = ds[tag]  # converted as Dataset.to_json_dict converts it (charset, VR correction)
    value = element.to_json_dict(
        bulk_data_element_handler=None, bulk_data_threshold=_BULK_THRESHOLD
    )
    return element, f'"{tag:08X}": {json.dumps(value)}'


# Explicit VR: these carry a 4-byte length after two reserved bytes (PS3.5 7.1.2), the others 2.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ UC UN UR UT".split())
_SHORT_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST SV TM UI UL US UV".split()
)
_VRS = _SHORT_VRS | _LONG_VRS
_EXPLICIT_LE = (b"1.2.840.10008.1.2.1", b"1.2.840.10008.1.2.1\x00")


def _read(data: bytes) -> pydicom.Dataset:
    """``dcmread(stop_before_pixels=True)``'s data set, without its file meta when the file is
    plainly Explicit VR Little Endian (what the door writes): the group 2 walk, command set
    check and FileDataset cost a third of the whole. Anything else goes through dcmread."""
    pos, end = 132, len(data)
    syntax = None
    if data[128:132] == b"DICM":
        while pos + 8 <= end and data[pos : pos + 2] == b"\x02\x00":
            vr = data[pos + 4 : pos + 6]
            if vr in _SHORT_VRS:
                start, length = pos + 8, int.from_bytes(data[pos + 6 : pos + 8], "little")
            elif vr in _LONG_VRS and pos + 12 <= end:
                start, length = pos + 12, int.from_bytes(data[pos + 8 : pos + 12], "little")
            else:
                syntax = None  # not a meta group dcmread reads as we do
                break
            if length == 0xFFFFFFFF or start + length > end:
                syntax = None
                break
            if data[pos + 2 : pos + 4] == b"\x10\x00":
                syntax = data[start : start + length]
            pos = start + length
        # After the meta: a data set (not EOF, not a command set group 0000) that reads as
        # explicit VR (read_dataset switches to implicit otherwise: left to dcmread).
        if (
            syntax in _EXPLICIT_LE
            and pos + 8 <= end
            and data[pos : pos + 2] != b"\x00\x00"
            and data[pos + 4 : pos + 6] in _VRS
        ):
            fp = io.BytesIO(data)
            fp.seek(pos)
            ds = read_dataset(fp, False, True, stop_when=_at_pixel_data)
            if ds.original_encoding == (False, True):
                ds.set_original_encoding(False, True, ds._character_set)  # as read_partial
                return ds
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def metadata_json_of(data: bytes) -> str:
    """The DICOM JSON of one Part 10 file, pixel data left out (fetched through ``/frames``).

    The same string as ``metadata_json_reference``; elements met before (in this process) are
    not converted again."""
    ds = _read(data)
    encoding = ds.original_character_set or ds._character_set
    charset = encoding if isinstance(encoding, str) else tuple(encoding)
    memo = _memo
    parts = []
    for tag, raw in list(ds._dict.items()):
        if (
            not isinstance(raw, RawDataElement)
            or raw.value is None
            or len(raw.value) > _MEMO_MAX_VALUE
        ):
            parts.append(_element_text(ds, tag)[1])
            continue
        key = (
            tag,
            raw.VR,
            raw.value,
            raw.is_little_endian,
            raw.is_implicit_VR,
            raw.length,  # 0xFFFFFFFF: undefined
            charset,
        )
        text = memo.get(key)
        if text is not None:
            try:
                memo.move_to_end(key)
            except KeyError:  # another thread dropped it meanwhile
                pass
        else:
            element, text = _element_text(ds, tag)
            if _stands_alone(raw.tag, raw.VR) and (
                element.VR != VR.SQ or _items_stand_alone(element)
            ):
                memo[key] = text
                if len(memo) > _MEMO_ENTRIES:
                    try:
                        memo.popitem(last=False)
                    except KeyError:
                        pass
        parts.append(text)
    return "{" + ", ".join(parts) + "}"


_INSERT_METADATA = PreparedInsert(InstanceMetadata, ignore_conflicts=True)


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
    # Plain VALUES rows (backend.config.prepared): Django 5.2's bulk_create sends PostgreSQL
    # one array per column (UNNEST), and psycopg quotes an array of text client-side with a
    # regular-expression callback per double quote: ~0.7 ms for each JSON text, 12 % of a
    # 50-slice STOW-RS. Each text as a parameter of its own is escaped by libpq.
    _INSERT_METADATA.insert(rows)


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
        _INSERT_METADATA.insert(missing)
    return texts


def metadata_response_body(texts: Sequence[str]) -> bytes:
    """The body ``json.dumps([...])`` would give for the parsed texts, without parsing them."""
    return ("[" + ", ".join(texts) + "]").encode()
