"""The door's fast path: the same profile as ``profile.deidentify``, applied to the encoded bytes.

The dataset path (``read_dicom`` -> ``deidentify`` -> ``write_dicom``) builds a pydicom element
for every attribute, decodes every value, copies the header and writes every value back through
pydicom's writer: ~2-3 ms per 384 x 512 MR slice, most of it spent on values that stay
unchanged. Here (~0.4 ms, ``benchmarks/deid.py``) the file is walked once into a light tree of
(tag, VR, byte range) records, the profile's action for each (tag, VR) is looked up in a memo,
and the output is assembled from slices of the input (kept values, the pixel data included, are
never decoded nor copied before the final join) and the few values the profile changes (UIDs,
dates, dummies, cleaned descriptors), decoded and encoded as pydicom's converters do, so they
come out as the dataset path's do.

Every check of the dataset path is kept, in the same order: the same size, DICM, preamble,
file meta, DICOMDIR, syntax, bounded inflation and ``safety.prescan`` checks (``profile``'s
own functions; only a plain explicit file meta group is read here instead of by pydicom) run
first and raise the same refusals. What follows never refuses on its own: anything the dataset
path would refuse (an unknown VR, a number of the wrong length, a UID with letters, an image
that is not an accepted MR, ...) and anything this walk does not cover (big endian, elements
out of order or repeated, an ambiguous VR it cannot settle, a UN pydicom would re-interpret,
...) raises ``Fallback``, and ``profile.deidentify_file`` then runs the dataset path on the same
bytes, which refuses with its reason or de-identifies the file. So the fast path only answers
for the files it was built to agree on; ``tests/deid/test_fast.py`` checks the agreement,
element for element (and byte for byte where the fast path answers), over the pydicom corpus,
the builders' files, character sets, odd encodings and mutated files.
"""

from __future__ import annotations

import bisect
import io
import re
import struct
from dataclasses import dataclass
from typing import Any

from pydicom import config as pydicom_config
from pydicom._dicom_dict import DicomDictionary
from pydicom._uid_dict import UID_dictionary
from pydicom.charset import convert_encodings, encode_string
from pydicom.datadict import (
    _dictionary_vr_fast,
    dictionary_keyword,
    dictionary_VR,
    private_dictionary_VR,
)
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.values import convert_value, converters

from backend.deid import profile as P
from backend.deid.safety import MAX_DEPTH
from backend.deid.table import KEEP, KEEP_UIDS, TYPE1_IN_ENHANCED_MR
from backend.deid.table_e11 import TABLE


class Fallback(Exception):
    """The fast path does not answer for this file: the dataset path decides."""


_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_CHARSET = 0x00080005
_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"}
)
_KNOWN_VRS = frozenset(str(vr) for vr in converters if len(str(vr)) == 2)
_VR_OF_BYTES = {vr.encode(): vr for vr in _KNOWN_VRS}
# pydicom refuses (BytesLengthException) a number whose length is not a multiple of its size;
# AT of a wrong length goes through a retry path: left to the dataset path.
_NUMBER_SIZE = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "UV": 8, "SV": 8, "AT": 4}
_DEFAULT_ENCODINGS = ["iso8859"]
_UID_LOOSE = re.compile(rb"^[0-9.]*$")  # profile._UID_LOOSE, on bytes

# Top-level elements the profile writes itself (their originals are replaced).
_PATIENT_NAME, _PATIENT_ID = 0x00100010, 0x00100020
_IDENTITY_REMOVED, _METHOD, _METHOD_CODES = 0x00120062, 0x00120063, 0x00120064
_LONGITUDINAL = 0x00280303
_WRITTEN = (_PATIENT_NAME, _PATIENT_ID, _IDENTITY_REMOVED, _METHOD, _METHOD_CODES, _LONGITUDINAL)
# Top-level attributes read for the checks and the pseudonyms (decoded by pydicom, lazily).
_TOP_KEYWORDS = (
    "SpecificCharacterSet", "SOPClassUID", "BurnedInAnnotation", "StudyInstanceUID",
    "SeriesInstanceUID", "SOPInstanceUID", "Rows", "Columns", "NumberOfFrames",
    "SamplesPerPixel", "BitsAllocated", "PixelRepresentation", "PatientID", "PatientName",
    "StationName", "DeviceSerialNumber", "Manufacturer", "ManufacturerModelName",
    "DirectoryRecordSequence", "ImageType", "BodyPartExamined",
)  # fmt: skip
_TOP_TAGS = frozenset(tag for tag, entry in DicomDictionary.items() if entry[4] in _TOP_KEYWORDS)
_IDENTIFYING_TAGS = frozenset(
    tag
    for tag, entry in DicomDictionary.items()
    if entry[4] in P._IDENTIFYING_KEYWORDS or entry[4] in P._PN_KEYWORDS
)

# Element records: (tag, VR, header start, value start, value end, undefined length, items).
# ``items`` is a list of (elements, undefined-length item) for a sequence, else None; the
# encapsulated pixel data's value range ends after its sequence delimiter.
Element = tuple[int, str, int, int, int, bool, Any]


@dataclass
class DeidentifiedFile:
    """What the door needs from one de-identified file."""

    data: bytes  # the Part 10 file to store
    ds: Dataset  # its data set, as ``read_dicom`` of ``data`` gives it (pixel data read on use)
    scanner: str  # ``profile.scanner_pseudonym_from`` the original


# --- parsing ----------------------------------------------------------------------------------


class _Parser:
    """One walk over an explicit or implicit VR little endian data set already passed by
    ``safety.prescan``. Raises ``Fallback`` on anything it does not cover."""

    def __init__(self, buf: bytes, explicit: bool) -> None:
        self.buf = buf
        self.mv = memoryview(buf)
        self.explicit = explicit
        # Elements whose decoded value feeds Clean Descriptors' identifying words:
        # (VR, keyword, raw value, encodings).
        self.word_sources: list[tuple[str, str, bytes, list[str]]] = []
        # Implicit VR "US or SS" elements at the top level, settled by PixelRepresentation.
        self.us_or_ss: list[int] = []
        self.creators: dict[int, str] = {}

    def dataset(
        self, pos: int, end: int, depth: int, encodings: list[str], delimited: bool
    ) -> tuple[list[Element], int, list[str]]:
        if depth > MAX_DEPTH:
            raise Fallback("deep")
        buf, explicit = self.buf, self.explicit
        unpack = struct.unpack_from
        elements: list[Element] = []
        last = -1
        while pos < end:
            group, elem = unpack("<HH", buf, pos)
            tag = (group << 16) | elem
            if tag == _ITEM_END or tag == _SEQ_END:
                if not delimited or tag != _ITEM_END:
                    raise Fallback("stray delimiter")
                return elements, pos, encodings
            if tag <= last or group == 0xFFFE or (group == 0x0002 and depth == 0):
                raise Fallback("order")  # pydicom sorts (and drops duplicates): not done here
            last = tag
            start = pos
            if explicit:
                vr_bytes = buf[pos + 4 : pos + 6]
                vr = _VR_OF_BYTES.get(vr_bytes)
                if vr is None:
                    raise Fallback("unknown VR")
                if vr in _LONG_VRS:
                    (length,) = unpack("<I", buf, pos + 8)
                    pos += 12
                else:
                    (length,) = unpack("<H", buf, pos + 6)
                    pos += 8
                if vr == "UN":
                    vr = self._un(tag, length, elements, encodings)
            else:
                (length,) = unpack("<I", buf, pos + 4)
                pos += 8
                vr = self._implicit_vr(tag, length, pos, elements, encodings, depth)
            if length == _UNDEFINED:
                if tag == _PIXEL_DATA:
                    if depth:
                        raise Fallback("nested pixel data")
                    after = self._fragments(pos, end)
                    elements.append((tag, vr, start, pos, after, True, None))
                    pos = after
                    continue
                if vr != "SQ":
                    raise Fallback("undefined length")
                items, pos = self._items(pos, end, depth + 1, encodings, delimited=True)
                elements.append((tag, vr, start, pos, pos, True, items))
                continue
            value_end = pos + length
            if value_end > end:
                raise Fallback("length")
            if vr == "SQ":
                items, after = self._items(pos, value_end, depth + 1, encodings, delimited=False)
                if after != value_end:
                    raise Fallback("sequence length")
                elements.append((tag, vr, start, pos, value_end, False, items))
            else:
                size = _NUMBER_SIZE.get(vr)
                if size is not None and length % size:
                    raise Fallback("number length")  # pydicom refuses it
                if tag == _CHARSET:
                    encodings = self._charset(self.buf[pos:value_end])
                if vr == "PN" or tag in _IDENTIFYING_TAGS:
                    keyword = dictionary_keyword(tag) if tag in DicomDictionary else ""
                    self.word_sources.append((vr, keyword, self.buf[pos:value_end], encodings))
                elif vr == "UI" and length:
                    self._check_uid_characters(pos, value_end)
                elements.append((tag, vr, start, pos, value_end, False, None))
            pos = value_end
        if delimited:
            raise Fallback("unterminated item")
        return elements, pos, encodings

    def _items(
        self, pos: int, end: int, depth: int, encodings: list[str], *, delimited: bool
    ) -> tuple[list[tuple[list[Element], bool]], int]:
        if depth > MAX_DEPTH:
            raise Fallback("deep")
        unpack = struct.unpack_from
        items: list[tuple[list[Element], bool]] = []
        while delimited or pos < end:
            if pos + 8 > end:
                raise Fallback("truncated")
            tag, length = unpack("<II", self.buf, pos)
            tag = ((tag & 0xFFFF) << 16) | (tag >> 16)
            if delimited and tag == _SEQ_END:
                return items, pos + 8
            if tag != _ITEM:
                raise Fallback("item")
            pos += 8
            if length == _UNDEFINED:
                elements, pos, _ = self.dataset(pos, end, depth, encodings, delimited=True)
                pos += 8  # the item delimiter
                items.append((elements, True))
            else:
                if pos + length > end:
                    raise Fallback("item length")
                elements, after, _ = self.dataset(pos, pos + length, depth, encodings, False)
                if after != pos + length:
                    raise Fallback("item length")
                pos = after
                items.append((elements, False))
        return items, pos

    def _fragments(self, pos: int, end: int) -> int:
        unpack = struct.unpack_from
        while True:
            if pos + 8 > end:
                raise Fallback("fragments")
            tag, length = unpack("<II", self.buf, pos)
            tag = ((tag & 0xFFFF) << 16) | (tag >> 16)
            pos += 8
            if tag == _SEQ_END:
                return pos
            if tag != _ITEM or length == _UNDEFINED or pos + length > end:
                raise Fallback("fragments")
            pos += length

    def _charset(self, raw: bytes) -> list[str]:
        value = convert_value("CS", _raw(_CHARSET, "CS", raw), None)
        return convert_encodings(value)

    def _check_uid_characters(self, start: int, end: int) -> None:
        """profile._check_image: every UID, at every depth, only digits and dots."""
        for value in self.buf[start:end].rstrip(b"\x00 ").split(b"\\"):
            if not _UID_LOOSE.match(value.strip(b"\x00 ")):
                raise Fallback("uid characters")

    def _private_vr(self, tag: int, elements: list[Element], encodings: list[str]) -> str:
        """hooks._private_vr_for_tag: the VR pydicom gives a private element it reads as UN."""
        element = tag & 0xFFFF
        if 0x0010 <= element <= 0x00FF:
            return "LO"
        if element & 0xFF00:
            creator_tag = (tag & 0xFFFF0000) | (element >> 8)
            # The level's elements are in tag order (else Fallback): the creator by bisection.
            at = bisect.bisect_left(elements, creator_tag, key=_tag_of)
            if at < len(elements) and elements[at][0] == creator_tag:
                creator = self._creator(elements[at], encodings)
                if creator:
                    try:
                        return str(private_dictionary_VR(tag, creator))
                    except KeyError:
                        pass
        return "UN"

    def _creator(self, element: Element, encodings: list[str]) -> str:
        """A private creator's value as pydicom decodes it (kept per element: a level may hold
        thousands of private elements)."""
        found = self.creators.get(element[3])
        if found is None:
            raw = self.buf[element[3] : element[4]]
            value = convert_value(element[1], _raw(element[0], element[1], raw), encodings)
            if value and not isinstance(value, str):
                raise Fallback("a multi-valued private creator")
            found = self.creators[element[3]] = str(value or "")
        return found

    def _un(self, tag: int, length: int, elements: list[Element], encodings: list[str]) -> str:
        """An explicit UN: pydicom re-reads it with the VR it knows for the tag, if any."""
        if length == _UNDEFINED:
            raise Fallback("undefined length UN")
        if tag >> 16 & 1:
            if self._private_vr(tag, elements, encodings) != "UN":
                raise Fallback("known private UN")
        elif tag in DicomDictionary:
            raise Fallback("known public UN")
        return "UN"

    def _implicit_vr(
        self, tag: int, length: int, pos: int, elements: list[Element], encodings: list[str],
        depth: int,
    ) -> str:  # fmt: skip
        if length == _UNDEFINED and tag != _PIXEL_DATA:
            # pydicom: the public dictionary's VR, else a look at the next tag (an item: SQ)
            try:
                vr = _dictionary_vr_fast(tag)
            except KeyError:
                (next_tag,) = struct.unpack_from("<I", self.buf, pos)
                if ((next_tag & 0xFFFF) << 16) | (next_tag >> 16) != _ITEM:
                    raise Fallback("undefined length") from None
                return "SQ"
            if vr != "SQ":
                raise Fallback("undefined length")
            return vr
        entry = DicomDictionary.get(tag)
        if entry is not None:
            vr = entry[0]
        elif tag >> 16 & 1:
            vr = self._private_vr(tag, elements, encodings)
        elif tag & 0xFFFF == 0:
            vr = "UL"
        else:
            try:
                vr = dictionary_VR(tag)  # repeating groups
            except KeyError:
                vr = "UN"
        if len(vr) == 2:
            return vr
        if tag == _PIXEL_DATA:
            return "OW"  # pydicom: always OW in an implicit VR data set (PS3.5 A.1)
        group = tag >> 16
        if vr == "OB or OW" and (0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF):
            return "OW"  # curve or overlay data: removed whatever its VR
        if vr == "US or SS" and depth == 0:
            if length % 2:
                raise Fallback("number length")
            self.us_or_ss.append(tag)
            return vr  # settled once PixelRepresentation is known
        raise Fallback("ambiguous VR")


def _tag_of(element: Element) -> int:
    return element[0]


def _raw(tag: int, vr: str | None, value: bytes, implicit: bool = False) -> RawDataElement:
    return RawDataElement(BaseTag(tag), vr, len(value), value, 0, implicit, True)


# --- the profile's actions ----------------------------------------------------------------------

_DROP, _KEEP, _RECURSE, _EMPTY, _UIDS, _UIDS_UNLESS_STANDARD, _SHIFT, _CLEAN, _CONSTANT = range(9)
_MEMO: tuple[dict[tuple[int, str], tuple[int, str]], dict[tuple[int, str], tuple[int, str]]]
_MEMO = ({}, {})


def _action(tag: int, vr: str, enhanced: bool) -> tuple[int, str]:
    """profile._apply for one element, as (action, constant value): computed once per
    (tag, VR, Enhanced MR or not) and kept, up to a bound (a stream of made-up tags must not
    grow the memo without end)."""
    memo = _MEMO[enhanced]
    key = (tag, vr)
    found = memo.get(key)
    if found is None:
        found = _decide(tag, vr, enhanced)
        if len(memo) < _MEMO_SIZE:
            memo[key] = found
    return found


_MEMO_SIZE = 50_000
_OVERLAY_GROUPS = frozenset(range(0x6000, 0x6020, 2))


def _decide(tag: int, vr: str, enhanced: bool) -> tuple[int, str]:
    group = tag >> 16
    if group & 1 or 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
        return _DROP, ""
    row = TABLE.get(tag)
    keyword = dictionary_keyword(tag) if tag in DicomDictionary else ""
    if row is not None:
        if row.modified_dates:
            if vr in ("DA", "DT"):
                return _SHIFT, ""
            return (_KEEP, "") if vr == "TM" else (_DROP, "")
        if row.clean_descriptors:
            if vr == "SQ":
                return _RECURSE, ""
            if vr in P._TEXT_VRS and vr not in ("PN", "AS"):
                return _CLEAN, ""
            return _DROP, ""
        basic = row.basic
        if basic == "U":
            return _UIDS, ""
        if basic == "X/Z/U*":
            return (_RECURSE, "") if vr == "SQ" else (_DROP, "")
        if basic in ("Z", "Z/D"):
            return _EMPTY, ""
        if basic == "D" or (
            basic in ("X/D", "X/Z/D") and enhanced and keyword in TYPE1_IN_ENHANCED_MR
        ):
            return _dummy(vr)
        return _DROP, ""
    if not keyword and group != 0x7FE0:
        return _DROP, ""
    if vr == "SQ":
        return _RECURSE, ""
    if vr == "UI":
        return (_KEEP, "") if keyword in KEEP_UIDS else (_UIDS_UNLESS_STANDARD, "")
    if vr in ("DA", "DT"):
        return _SHIFT, ""
    if (vr in P._TEXT_VRS or vr in P._BINARY_VRS) and keyword not in KEEP:
        return _DROP, ""
    return _KEEP, ""


def _dummy(vr: str) -> tuple[int, str]:
    """profile._dummy"""
    if vr == "SQ":
        return _RECURSE, ""
    if vr == "PN":
        return _CONSTANT, P._PN_DUMMY
    if vr in ("LO", "SH", "LT", "ST", "UT", "UC", "CS"):
        return _CONSTANT, P._STRING_DUMMY
    if vr == "UI":
        return _UIDS, ""
    if vr in ("DA", "DT"):
        return _SHIFT, ""
    if vr == "TM":
        return _CONSTANT, "000000"
    if vr in ("IS", "DS"):
        return _CONSTANT, "0"
    return _DROP, ""


# --- writing -------------------------------------------------------------------------------------

_pack_short = struct.Struct("<HH2sH").pack
_pack_long = struct.Struct("<HH2sHI").pack
_pack_item = struct.Struct("<HHI").pack
_SEQ_DELIMITER = _pack_item(0xFFFE, 0xE0DD, 0)
_ITEM_DELIMITER = _pack_item(0xFFFE, 0xE00D, 0)
_STRING_VRS_LATIN1 = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})


def _header(tag: int, vr: str, length: int) -> bytes:
    if vr in _LONG_VRS:
        return _pack_long(tag >> 16, tag & 0xFFFF, vr.encode(), 0, length)
    if length > 0xFFFF:
        raise Fallback("long value in a short VR")  # pydicom writes it as UN
    return _pack_short(tag >> 16, tag & 0xFFFF, vr.encode(), length)


def _encode(vr: str, values: list[str], encodings: list[str]) -> bytes:
    """What pydicom's writer makes of a value the profile set (string VRs only): text VRs and
    names in the data set's character set, the others in the default one; padded to even."""
    if len(values) == 1 and not values[0]:
        return b""  # pydicom writes nothing for an empty value
    if vr in _STRING_VRS_LATIN1 or encodings == _DEFAULT_ENCODINGS:
        data = "\\".join(values).encode("latin-1")  # what encode_string does for iso8859
    else:
        data = b"\\".join(encode_string(v, encodings) for v in values)
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return data


class _Writer:
    def __init__(self, parser: _Parser, key: bytes, days: int, enhanced: bool) -> None:
        self.buf = parser.buf
        self.mv = parser.mv
        self.parser = parser
        self.key = key
        self.days = days
        self.enhanced = enhanced
        self.forbidden: list[re.Pattern[str]] | None = None
        self.uids: dict[bytes, str] = {}
        self.marks: list[int] = []  # where each top-level element starts in the output

    def dataset(
        self, elements: list[Element], encodings: list[str], pieces: list[Any],
        added: list[tuple[int, bytes]] | None = None,
    ) -> int:  # fmt: skip
        """Append ``elements`` de-identified to ``pieces``; the number of bytes appended. At the
        top level, ``added`` (tag-sorted) replaces the originals of the same tags."""
        total = 0
        enhanced = self.enhanced
        mv = self.mv
        pending = added[::-1] if added else []
        marks = self.marks if added else None
        for tag, vr, _hstart, vstart, vend, undefined, items in elements:
            while pending and pending[-1][0] <= tag:
                encoded = pending.pop()[1]
                if marks is not None:
                    marks.append(total)
                pieces.append(encoded)
                total += len(encoded)
            if added and tag in _WRITTEN:
                continue
            if marks is not None:
                marks.append(total)  # taken off again if the element is dropped
            if tag == _CHARSET:
                encodings = self.parser._charset(self.buf[vstart:vend])
            action, constant = _action(tag, vr, enhanced)
            if action == _DROP:
                if marks is not None:
                    marks.pop()
                continue
            if vr == "SQ":
                if action != _RECURSE and action != _EMPTY:
                    raise Fallback("a sequence where the profile expects a value")
                total += self.sequence(tag, undefined, items if action == _RECURSE else [],
                                       encodings, pieces)  # fmt: skip
                continue
            if action == _KEEP:
                if undefined:  # encapsulated pixel data: the fragments as they are
                    pieces.append(_pack_long(tag >> 16, tag & 0xFFFF, vr.encode(), 0, _UNDEFINED))
                    pieces.append(mv[vstart:vend])
                    total += 12 + vend - vstart
                    continue
                length = vend - vstart
                pad = length & 1
                head = _header(tag, vr, length + pad)
                pieces.append(head)
                pieces.append(mv[vstart:vend])
                if pad:  # pydicom pads what it writes back to an even length
                    pieces.append(b"\x00" if vr in ("UI", "OB", "UN", "OW") else b" ")
                total += len(head) + length + pad
                continue
            if action == _EMPTY:
                value = b""
            elif action == _CONSTANT:
                value = _encode(vr, [constant], encodings)
            else:
                changed = self.changed(action, tag, vr, self.buf[vstart:vend], encodings)
                if changed is None:  # a standard UID: kept as it is
                    changed = self.buf[vstart:vend]
                    if len(changed) % 2:
                        changed += b"\x00"
                value = changed
            head = _header(tag, vr, len(value))
            pieces.append(head)
            pieces.append(value)
            total += len(head) + len(value)
        while pending:
            encoded = pending.pop()[1]
            if marks is not None:
                marks.append(total)
            pieces.append(encoded)
            total += len(encoded)
        return total

    def sequence(
        self, tag: int, undefined: bool, items: list[tuple[list[Element], bool]],
        encodings: list[str], pieces: list[Any],
    ) -> int:  # fmt: skip
        at = len(pieces)
        pieces.append(b"")  # the header, once the length is known
        total = 0
        for elements, item_undefined in items:
            item_at = len(pieces)
            pieces.append(b"")
            size = self.dataset(elements, encodings, pieces)
            if item_undefined:
                pieces[item_at] = _pack_item(0xFFFE, 0xE000, _UNDEFINED)
                pieces.append(_ITEM_DELIMITER)
                size += 8
            else:
                pieces[item_at] = _pack_item(0xFFFE, 0xE000, size)
            total += 8 + size
        if undefined:
            pieces.append(_SEQ_DELIMITER)
            total += 8
        pieces[at] = _pack_long(tag >> 16, tag & 0xFFFF, b"SQ", 0,
                                _UNDEFINED if undefined else total)  # fmt: skip
        return 12 + total

    def changed(
        self, action: int, tag: int, vr: str, raw: bytes, encodings: list[str]
    ) -> bytes | None:
        """A value the profile changes, or None when it keeps it as it is."""
        if not raw:
            return b""  # profile: an empty value stays empty
        if (action == _UIDS or action == _UIDS_UNLESS_STANDARD) and vr != "UI":
            raise Fallback("UIDs in another VR")
        value: Any
        if vr in ("UI", "DA", "DT") and not pydicom_config.datetime_conversion:
            # convert_UI / convert_string: the default character set, padding off, split
            values = raw.decode("latin-1").rstrip("\x00 ").split("\\")
            value = values[0] if len(values) == 1 else values
        else:
            value = convert_value(vr, _raw(tag, vr, raw), encodings)
            values = list(value) if isinstance(value, (list, MultiValue)) else [value]
        if action == _UIDS or action == _UIDS_UNLESS_STANDARD:
            if not value:
                return b""
            if action == _UIDS_UNLESS_STANDARD and all(str(v) in UID_dictionary for v in values):
                return None
            return _encode(vr, [self.uid(str(v)) for v in values], encodings)
        if action == _SHIFT:
            return _encode(vr, [P._shift_date(str(v or ""), self.days) for v in values], encodings)
        # _CLEAN
        if self.forbidden is None:
            self.forbidden = _forbidden(self.parser.word_sources)
        cleaned = [P._clean_text(str(v or ""), self.forbidden) for v in values]
        return _encode(vr, cleaned, encodings)

    def uid(self, uid: str) -> str:
        key = uid.encode()
        mapped = self.uids.get(key)
        if mapped is None:
            mapped = self.uids[key] = P.pseudonymous_uid(uid, key=self.key)
        return mapped


def _forbidden(sources: list[tuple[str, str, bytes, list[str]]]) -> list[re.Pattern[str]]:
    """profile._identifying_words, from the values the walk set aside."""
    words: set[str] = set()
    for vr, keyword, raw, encodings in sources:
        if raw:  # an empty value gives no word
            P._add_words(words, vr, keyword, convert_value(vr, _raw(0, vr, raw), encodings))
    return P._word_patterns(words)


# --- the door -------------------------------------------------------------------------------


def deidentify_fast(data: bytes, *, key: bytes, max_bytes: int) -> DeidentifiedFile:
    """The fast path alone: raises ``Rejected`` for what ``profile._open`` refuses, ``Fallback``
    for anything else it does not answer for (tests call it to see that it does answer)."""
    syntax, body, start = _open(data, max_bytes)
    if syntax == ExplicitVRBigEndian:
        raise Fallback("big endian")
    parser = _Parser(body, syntax != ImplicitVRLittleEndian)
    elements, end, encodings = parser.dataset(start, len(body), 0, _DEFAULT_ENCODINGS, False)
    if end != len(body):
        raise Fallback("trailing bytes")

    overlays = {e[0] for e in elements if e[0] >> 16 in _OVERLAY_GROUPS}
    if any(t & 0xFFFF == 0x0102 and (t & 0xFFFF0000 | 0x3000) not in overlays for t in overlays):
        # An overlay with a bit position and no data of its own lives in the pixel cells'
        # unused bits: the dataset path clears them (profile.embedded_overlays).
        raise Fallback("an overlay embedded in the pixels")
    top = _Top(body, elements, encodings)
    if parser.us_or_ss:
        _settle_us_or_ss(elements, parser.us_or_ss, top)
    sop_class, sop_instance = _check_image(top, syntax, elements)
    source = P.patient_source(top.text(_PATIENT_ID), top.text(_TAG["StudyInstanceUID"]))
    scanner = P._scanner_of([top.text(tag).strip() for tag in _SCANNER_TAGS], key)
    if any(e[0] in _WRITTEN and e[1] != _WRITTEN_VR[e[0]] for e in elements):
        raise Fallback("a replaced attribute with another VR")

    writer = _Writer(parser, key, P._days_of(source, key), sop_class == P.ENHANCED_MR_IMAGE)
    pieces: list[Any] = []
    added = _added(P._pseudonym_of(source, key), encodings)
    writer.dataset(elements, _DEFAULT_ENCODINGS, pieces, added)
    new_instance = writer.uid(sop_instance)
    compressed = syntax.is_compressed and syntax != DeflatedExplicitVRLittleEndian
    out_syntax = syntax if compressed else ExplicitVRLittleEndian
    head = bytes(128) + b"DICM" + _file_meta(sop_class, new_instance, out_syntax)
    clean = b"".join([head, *pieces])
    return DeidentifiedFile(
        data=clean, ds=_dataset_of(clean, len(head), writer.marks, encodings), scanner=scanner
    )


def _open(data: bytes, max_bytes: int) -> tuple[UID, bytes, int]:
    """profile._open, with the file meta read here when it is the usual explicit VR little
    endian group (pydicom reads it otherwise): the same checks, in the same order."""
    P._check_envelope(data, max_bytes)
    try:
        syntax, media_class, start = _read_meta(data)
    except Fallback:
        _meta, syntax, media_class, start = P._read_meta(data)
    body, start = P._open_body(data, syntax, media_class, start, max_bytes)
    return syntax, body, start


def _read_meta(data: bytes) -> tuple[UID, str, int]:
    """The transfer syntax and media storage class of a plain file meta group, and where the
    data set starts; ``Fallback`` for anything pydicom would read differently."""
    unpack = struct.unpack_from
    pos, end, last = 132, len(data), -1
    values: dict[int, str] = {}
    while pos + 8 <= end:
        group, elem, vr_bytes = unpack("<HH2s", data, pos)
        if group != 0x0002:
            break
        tag = 0x00020000 | elem
        vr = _VR_OF_BYTES.get(vr_bytes)
        if vr is None or vr in ("UN", "SQ") or tag <= last:
            raise Fallback("file meta")
        last = tag
        if vr in _LONG_VRS:
            if pos + 12 > end:
                raise Fallback("file meta")
            (length,) = unpack("<I", data, pos + 8)
            pos += 12
        else:
            (length,) = unpack("<H", data, pos + 6)
            pos += 8
        size = _NUMBER_SIZE.get(vr)
        if length == _UNDEFINED or pos + length > end or (size is not None and length % size):
            raise Fallback("file meta")
        if tag in (0x00020002, 0x00020010):
            if vr != "UI":
                raise Fallback("file meta")
            text = data[pos : pos + length].decode("latin-1").rstrip("\x00 ")
            if "\\" in text:
                raise Fallback("file meta")
            values[tag] = text
        pos += length
    else:
        raise Fallback("file meta")
    return UID(values.get(0x00020010, "").strip()), values.get(0x00020002, "").strip(), pos


_SCANNER_TAGS = tuple(
    tag for keyword in P.SCANNER_KEYWORDS for tag, entry in DicomDictionary.items()
    if entry[4] == keyword
)  # fmt: skip
_TAG = {entry[4]: tag for tag, entry in DicomDictionary.items() if entry[4] in _TOP_KEYWORDS}
_IS = re.compile(r"^ *[0-9]+ *$")


class _Top:
    """The original's top-level attributes the checks and the pseudonyms read, decoded as pydicom
    decodes them for ``ds.get(keyword)``: simply where the value is plain (one value, the
    default character set), by pydicom's converters otherwise; ``Fallback`` where a check would
    need more."""

    def __init__(self, body: bytes, elements: list[Element], encodings: list[str]) -> None:
        self.body = body
        self.encodings = encodings
        self.plain = encodings == _DEFAULT_ENCODINGS
        self.elements = {e[0]: e for e in elements if e[0] in _TOP_TAGS}

    def raw(self, tag: int) -> tuple[str, bytes] | None:
        element = self.elements.get(tag)
        if element is None:
            return None
        return element[1], self.body[element[3] : element[4]]

    def text(self, tag: int) -> str:
        """``str(ds.get(keyword, ""))``"""
        found = self.raw(tag)
        if found is None:
            return ""
        vr, raw = found
        plain = self.plain and b"\\" not in raw and b"\x1b" not in raw  # no escape sequence
        if plain and vr in ("LO", "SH", "CS", "UI", "PN"):
            if vr == "PN":
                return raw.rstrip(b"\x00 ").decode("latin-1")
            return raw.decode("latin-1").rstrip("\x00 ")
        return str(convert_value(vr, _raw(tag, vr, raw), self.encodings))

    def count(self, tag: int, default: int) -> int:
        """``int(ds.get(keyword, default) or default)`` for one US or IS value, else Fallback."""
        found = self.raw(tag)
        if found is None:
            return default
        vr, raw = found
        if vr == "US" and len(raw) == 2:
            return struct.unpack("<H", raw)[0] or default
        if vr == "IS" and (not raw or _IS.match(raw.decode("latin-1"))):
            return int(raw or b"0") or default
        raise Fallback("an image attribute of an unusual form")


def _settle_us_or_ss(elements: list[Element], tags: list[int], top: _Top) -> None:
    """pydicom's correct_ambiguous_vr for a top-level "US or SS": US when PixelRepresentation
    is 0, else SS; without PixelRepresentation, left to the dataset path."""
    if _TAG["PixelRepresentation"] not in top.elements:
        raise Fallback("US or SS without PixelRepresentation")
    vr = "US" if top.count(_TAG["PixelRepresentation"], 0) == 0 else "SS"
    for index, element in enumerate(elements):
        if element[0] in tags:
            elements[index] = (element[0], vr, *element[2:])


def _check_image(top: _Top, syntax: UID, elements: list[Element]) -> tuple[str, str]:
    """profile._check_image (the UID characters are checked in the walk): ``Fallback`` wherever
    it would refuse (the dataset path then refuses with its reason). The SOP class and the
    original SOP instance UID."""
    sop_class = top.text(_TAG["SOPClassUID"]).strip()
    if sop_class not in P.ACCEPTED_SOP_CLASSES or _TAG["DirectoryRecordSequence"] in top.elements:
        raise Fallback("not an accepted image")
    if top.text(_TAG["BurnedInAnnotation"]).strip().upper() == "YES":
        raise Fallback("burned-in annotation")
    image_type = top.raw(_TAG["ImageType"])
    if image_type is not None:
        values = image_type[1].decode("latin-1").rstrip("\x00 ").split("\\")
        if P.image_type_refusal(values):
            raise Fallback("image type")
    if P.body_part_refusal(top.text(_TAG["BodyPartExamined"])):
        raise Fallback("body part")
    uids = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = top.text(_TAG[keyword])
        if not value or len(value) > 64 or not P._UID.match(value):
            raise Fallback("a malformed UID")
        uids.append(value)
    rows, columns = top.count(_TAG["Rows"], 0), top.count(_TAG["Columns"], 0)
    frames = top.count(_TAG["NumberOfFrames"], 1)
    samples = top.count(_TAG["SamplesPerPixel"], 1)
    bits = top.count(_TAG["BitsAllocated"], 0)
    if not (0 < rows <= P.MAX_MATRIX and 0 < columns <= P.MAX_MATRIX):
        raise Fallback("matrix")
    if not 0 < frames <= P.MAX_FRAMES or bits not in (8, 16, 32) or samples not in (1, 3):
        raise Fallback("format")
    pixel = next((e for e in reversed(elements) if e[0] == _PIXEL_DATA), None)
    if pixel is None:
        raise Fallback("no pixel data")
    if syntax.is_compressed and syntax != DeflatedExplicitVRLittleEndian:
        if not pixel[5]:
            raise Fallback("not encapsulated")
        try:
            P._check_encapsulated(top.body[pixel[3] : pixel[4]], frames)
        except P.Rejected:
            raise Fallback("encapsulation") from None
    elif pixel[5] or pixel[4] - pixel[3] - rows * columns * samples * frames * bits // 8 not in (
        0,
        1,
    ):
        raise Fallback("pixel data length")
    return sop_class, uids[2]


_WRITTEN_VR = {
    _PATIENT_NAME: "PN", _PATIENT_ID: "LO", _IDENTITY_REMOVED: "CS", _METHOD: "LO",
    _METHOD_CODES: "SQ", _LONGITUDINAL: "CS",
}  # fmt: skip


_ADDED: dict[tuple[str, ...], list[tuple[int, bytes]]] = {}


def _added(pseudonym: str, encodings: list[str]) -> list[tuple[int, bytes]]:
    """The top-level elements ``profile._deidentify`` sets, encoded, in tag order (all but the
    pseudonyms are the same for every file of a character set: kept per character set)."""
    fixed = _ADDED.get(tuple(encodings))
    if fixed is None:
        codes = []
        for code, meaning in P.METHOD_CODES:
            encoded = b"".join(
                _header(t, vr, len(v)) + v
                for t, vr, v in (
                    (0x00080100, "SH", _encode("SH", [code], encodings)),
                    (0x00080102, "SH", _encode("SH", ["DCM"], encodings)),
                    (0x00080104, "LO", _encode("LO", [meaning], encodings)),
                )
            )
            codes.append(_pack_item(0xFFFE, 0xE000, len(encoded)) + encoded)
        fixed = [
            (tag, _header(tag, vr, len(value)) + value)
            for tag, vr, value in (
                (_IDENTITY_REMOVED, "CS", _encode("CS", ["YES"], encodings)),
                (_METHOD, "LO", _encode("LO", [P.DEIDENTIFICATION_METHOD], encodings)),
                (_METHOD_CODES, "SQ", b"".join(codes)),
                (_LONGITUDINAL, "CS", _encode("CS", ["MODIFIED"], encodings)),
            )
        ]
        if len(_ADDED) < 64:
            _ADDED[tuple(encodings)] = fixed
    name = _encode("PN", [pseudonym], encodings)
    patient_id = _encode("LO", [pseudonym], encodings)
    return [
        (_PATIENT_NAME, _header(_PATIENT_NAME, "PN", len(name)) + name),
        (_PATIENT_ID, _header(_PATIENT_ID, "LO", len(patient_id)) + patient_id),
        *fixed,
    ]


def _file_meta(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    def element(elem: int, vr: str, value: bytes, pad: bytes = b"\x00") -> bytes:
        if len(value) % 2:
            value += pad
        return _header(0x00020000 | elem, vr, len(value)) + value

    group = b"".join(
        (
            element(0x0001, "OB", b"\x00\x01"),
            element(0x0002, "UI", sop_class.encode()),
            element(0x0003, "UI", sop_instance.encode()),
            element(0x0010, "UI", str(syntax).encode()),
            element(0x0012, "UI", str(P.IMPLEMENTATION_UID).encode()),
            element(0x0013, "SH", P.IMPLEMENTATION_VERSION.encode(), b" "),
        )
    )
    return _header(0x00020000, "UL", 4) + struct.pack("<I", len(group)) + group


def _dataset_of(clean: bytes, start: int, marks: list[int], encodings: list[str]) -> Dataset:
    """The clean file's data set as ``read_dicom`` of it gives it: pydicom's raw elements
    (decoded on first use), cut at the writer's marks instead of parsing the file again."""
    meta_marks, pos = [], 132
    while pos < start:
        meta_marks.append(pos)
        pos = _element_end(clean, pos)
    meta = FileMetaDataset(_raw_elements(clean, meta_marks, start))
    # The pixel data is read from the clean bytes when asked for, as dcmread's defer_size does:
    # not copied a second time (the door never reads it; a 24-frame Enhanced MR holds 9 MiB).
    elements = _raw_elements(clean, [start + m for m in marks], len(clean), defer=_PIXEL_DATA)
    ds = FileDataset(io.BytesIO(clean), elements, b"\x00" * 128, meta, False, True)
    ds.set_original_encoding(False, True, encodings)
    return ds


def _element_end(clean: bytes, at: int) -> int:
    if clean[at + 4 : at + 6].decode() in _LONG_VRS:
        return at + 12 + int(struct.unpack_from("<I", clean, at + 8)[0])
    return at + 8 + int(struct.unpack_from("<H", clean, at + 6)[0])


def _raw_elements(
    clean: bytes, marks: list[int], end: int, defer: int = -1
) -> dict[BaseTag, DataElement | RawDataElement]:
    """The elements written at ``marks`` (the last one ending at ``end``), as pydicom's reader
    yields them; the value of ``defer`` (if of defined length) left to be read on use."""
    out: dict[BaseTag, DataElement | RawDataElement] = {}
    for index, at in enumerate(marks):
        group, elem, vr_bytes = struct.unpack_from("<HH2s", clean, at)
        vr = vr_bytes.decode()
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", clean, at + 8)
            value_at = at + 12
        else:
            (length,) = struct.unpack_from("<H", clean, at + 6)
            value_at = at + 8
        # An undefined length ends with a sequence delimiter, which the reader does not keep.
        following = marks[index + 1] if index + 1 < len(marks) else end
        value_end = following - 8 if length == _UNDEFINED else value_at + length
        tag = BaseTag((group << 16) | elem)
        value = None if tag == defer and length != _UNDEFINED else clean[value_at:value_end]
        out[tag] = RawDataElement(tag, vr, length, value, value_at, False, True)
    return out
