"""The de-identification profile applied by every way in (see ``backend/deid/__init__.py``).

``read_dicom`` refuses hostile or unsupported files; ``deidentify`` applies the profile;
``write_dicom`` serialises with a zeroed preamble and a rebuilt file meta. UIDs are replaced by a
keyed HMAC of the original (``2.25.<128-bit integer>``), so the same original gets the same new
UID in every process on every day with no mapping table, and references between instances still
resolve. Dates move by a keyed per-patient offset, which keeps intervals within a patient.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
import re
from datetime import date, timedelta

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from backend.deid.safety import UnsafeFile, inflate_bounded, prescan
from backend.deid.table import CLEAN, EMPTY, KEEP, KEEP_UIDS, REMOVE

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
ACCEPTED_SOP_CLASSES = {MR_IMAGE: "MR Image", ENHANCED_MR_IMAGE: "Enhanced MR Image"}
UNCOMPRESSED = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian}
ACCEPTED_SYNTAXES = UNCOMPRESSED | {DeflatedExplicitVRLittleEndian, RLELossless}
IMPLEMENTATION_UID = UID("2.25.229390429870286331624939045418127361437")
IMPLEMENTATION_VERSION = "ARTISCAN_0_1"
MAX_MATRIX = 4096
MAX_FRAMES = 4096
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_DATE_IN_TEXT = re.compile(r"\b(19|20)\d{2}[-./]?(0[1-9]|1[0-2])[-./]?(0[1-9]|[12]\d|3[01])\b")
_LONG_NUMBER = re.compile(r"\d{5,}")
_TEXT_VRS = {"LO", "SH", "LT", "ST", "UT", "UC", "AE", "UR"}
_METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113105", "Clean Descriptors Option"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)


class Rejected(Exception):
    """A file ArtiScan will not take; ``reason`` is short and never quotes header values."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- reading --------------------------------------------------------------------------------


def read_dicom(data: bytes, *, max_bytes: int = 512 * 2**20) -> Dataset:
    """Parse one DICOM Part 10 file, refusing anything hostile, unsupported or not an MR image.

    Memory stays bounded by ``max_bytes`` plus the file itself: lengths are checked against the
    bytes present before pydicom reads them, and deflated data is inflated with a budget.
    """
    if not data:
        raise Rejected("empty file")
    if len(data) > max_bytes:
        raise Rejected(f"file larger than the {max_bytes // 2**20} MiB limit")
    if len(data) < 132 or data[128:132] != b"DICM":
        raise Rejected("not a DICOM Part 10 file (no DICM marker)")
    if data[:2] == b"MZ" or data[:4] == b"\x7fELF":
        raise Rejected("executable code in the preamble (polyglot file)")
    fp = io.BytesIO(data)
    try:
        read_preamble(fp, force=False)
        meta = pydicom.filereader._read_file_meta_info(fp)
        for _element in meta:  # decode every element now: a bad VR must fail here, not later
            pass
    except Exception:
        raise Rejected("unreadable file meta information") from None
    syntax = UID(str(meta.get("TransferSyntaxUID", "")))
    media_class = str(meta.get("MediaStorageSOPClassUID", ""))
    if media_class == "1.2.840.10008.1.3.10":
        raise Rejected("a DICOMDIR (its paths are never followed)")
    if syntax not in ACCEPTED_SYNTAXES:
        raise Rejected("unsupported transfer syntax")
    start = fp.tell()
    body = data
    explicit, little = syntax != ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian
    try:
        if syntax == DeflatedExplicitVRLittleEndian:
            body = inflate_bounded(data[start:], limit=max_bytes)
            start = 0
        prescan(body, start, explicit=explicit, little=little)
    except UnsafeFile as unsafe:
        raise Rejected(unsafe.reason) from None
    try:
        ds = read_dataset(
            io.BytesIO(body[start:]), is_implicit_VR=not explicit, is_little_endian=little
        )
        for _element in ds.iterall():  # decode every element now, nested ones included
            pass
    except Exception:
        raise Rejected("malformed data set") from None
    ds.file_meta = meta
    ds.set_original_encoding(not explicit, little)
    _check_image(ds, syntax)
    return ds


def _check_image(ds: Dataset, syntax: UID) -> None:
    try:
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class not in ACCEPTED_SOP_CLASSES:
            raise Rejected("not an MR image (only MR and Enhanced MR Image Storage are accepted)")
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            raise Rejected("burned-in annotation (may show patient data in the pixels)")
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            value = str(ds.get(keyword, ""))
            if not value or len(value) > 64 or not _UID.match(value):
                raise Rejected(f"missing or malformed {keyword}")
        rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 0))
    except Rejected:
        raise
    except Exception:
        raise Rejected("malformed image description attributes") from None
    if not (0 < rows <= MAX_MATRIX and 0 < columns <= MAX_MATRIX and 0 < frames <= MAX_FRAMES):
        raise Rejected("image matrix or frame count out of range")
    if bits not in (8, 16, 32) or samples not in (1, 3):
        raise Rejected("unsupported pixel format")
    if "PixelData" not in ds:
        raise Rejected("no pixel data")
    if syntax in UNCOMPRESSED or syntax == DeflatedExplicitVRLittleEndian:
        expected = rows * columns * samples * frames * bits // 8
        actual = len(ds.PixelData)
        if actual not in (expected, expected + 1):
            raise Rejected("pixel data length disagrees with Rows x Columns x bits")


# --- the profile ----------------------------------------------------------------------------


def _mac(key: bytes, label: str, value: str) -> bytes:
    return hmac.new(key, f"{label}|{value}".encode(), hashlib.sha256).digest()


def pseudonymous_uid(uid: str, *, key: bytes) -> str:
    """``2.25.<128-bit integer>`` from a keyed HMAC of ``uid`` (at most 44 characters)."""
    return "2.25." + str(int.from_bytes(_mac(key, "uid", uid.strip())[:16], "big"))


def patient_pseudonym(ds: Dataset, *, key: bytes) -> str:
    source = str(ds.get("PatientID", "")) or str(ds.get("PatientName", "")) or "unknown"
    return "ANON-" + _mac(key, "patient", source).hex()[:12].upper()


def date_shift_days(ds: Dataset, *, key: bytes) -> int:
    """A keyed per-patient shift of 1 to 3650 days into the past."""
    source = str(ds.get("PatientID", "")) or str(ds.get("PatientName", "")) or "unknown"
    return 1 + int.from_bytes(_mac(key, "dates", source)[:4], "big") % 3650


def scanner_pseudonym_from(ds: Dataset, *, key: bytes) -> str:
    """A keyed pseudonym of the scanner (station name, serial number, model), taken from the
    original before de-identification removes them; empty if nothing names the scanner."""
    parts = [
        str(ds.get(k, "")).strip()
        for k in ("StationName", "DeviceSerialNumber", "Manufacturer", "ManufacturerModelName")
    ]
    if not any(parts[:2]):
        return ""
    return _mac(key, "scanner", "|".join(parts)).hex()[:16]


def _shift_date(value: str, days: int) -> str:
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit():
        return ""
    try:
        moved = date(int(text[:4]), int(text[4:6]), int(text[6:8])) - timedelta(days=days)
    except ValueError:
        return ""
    return moved.strftime("%Y%m%d") + text[8:]


def _clean_text(value: str, forbidden: list[str]) -> str:
    cleaned = value
    for word in forbidden:
        cleaned = re.sub(re.escape(word), "", cleaned, flags=re.IGNORECASE)
    cleaned = _DATE_IN_TEXT.sub("", cleaned)
    cleaned = _LONG_NUMBER.sub("", cleaned)
    return re.sub(r"\s{2,}", " ", cleaned).strip(" ^_-")


def _identifying_words(ds: Dataset) -> list[str]:
    words: set[str] = set()
    for keyword in (
        "PatientName",
        "OtherPatientNames",
        "PatientBirthName",
        "ReferringPhysicianName",
        "OperatorsName",
        "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy",
    ):
        value = ds.get(keyword)
        values = value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value]
        for v in values:
            if v:
                words.update(w for w in re.split(r"[\^\s,=]+", str(v)) if len(w) >= 2)
    for keyword in ("PatientID", "AccessionNumber", "OtherPatientIDs", "StudyID"):
        value = str(ds.get(keyword, "") or "")
        if len(value) >= 3:
            words.add(value)
    return sorted(words, key=len, reverse=True)


def deidentify(original: Dataset, *, key: bytes) -> Dataset:
    """Apply the profile to a copy of ``original`` (as returned by ``read_dicom``)."""
    ds = copy.deepcopy(original)
    days = date_shift_days(original, key=key)
    forbidden = _identifying_words(original)
    _apply(ds, key=key, days=days, forbidden=forbidden, depth=0)

    pseudonym = patient_pseudonym(original, key=key)
    ds.PatientName = pseudonym
    ds.PatientID = pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.DeidentificationMethod = "ArtiScan PS3.15 E.2 Basic + Clean Descriptors + Modified Dates"
    codes = Sequence()
    for value, meaning in _METHOD_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    syntax = UID(str(original.file_meta.TransferSyntaxUID))
    meta.TransferSyntaxUID = RLELossless if syntax == RLELossless else ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    return ds


def _apply(ds: Dataset, *, key: bytes, days: int, forbidden: list[str], depth: int) -> None:
    ds.remove_private_tags()
    for element in list(ds):
        tag = element.tag
        if 0x5000 <= tag.group <= 0x50FF or 0x6000 <= tag.group <= 0x60FF:
            del ds[tag]  # curves and overlays (burned-in graphics may carry names)
            continue
        keyword = element.keyword
        if keyword in REMOVE or (not keyword and tag.group != 0x7FE0):
            del ds[tag]
        elif keyword in EMPTY:
            element.value = None
        elif element.VR == "SQ":
            for item in element.value:
                _apply(item, key=key, days=days, forbidden=forbidden, depth=depth + 1)
        elif element.VR == "UI":
            if keyword not in KEEP_UIDS and element.value:
                element.value = _map_uids(element, key)
        elif element.VR in ("DA", "DT"):
            element.value = _shift_values(element, days)
        elif keyword in CLEAN:
            element.value = _clean_text(str(element.value or ""), forbidden)
        elif keyword in KEEP:
            continue
        elif element.VR == "PN" or element.VR in _TEXT_VRS:
            # Names and free text not known to be safe go, whatever the attribute is.
            del ds[tag]
        elif element.VR == "AS":
            del ds[tag]


def _map_uids(element: DataElement, key: bytes) -> str | list[str]:
    values = element.value if element.VM > 1 else [element.value]
    mapped = [
        str(v) if str(v).startswith("1.2.840.10008.") else pseudonymous_uid(str(v), key=key)
        for v in values
    ]
    return mapped if element.VM > 1 else mapped[0]


def _shift_values(element: DataElement, days: int) -> str | list[str]:
    values = element.value if element.VM > 1 else [element.value]
    shifted = [_shift_date(str(v or ""), days) for v in values]
    return shifted if element.VM > 1 else shifted[0]


# --- writing --------------------------------------------------------------------------------


def write_dicom(ds: Dataset) -> bytes:
    """A Part 10 file: zeroed preamble, the file meta built by ``deidentify``."""
    out = io.BytesIO()
    ds.preamble = b"\x00" * 128
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def deidentify_bytes(
    data: bytes, *, key: bytes, max_bytes: int = 512 * 2**20
) -> tuple[bytes, Dataset]:
    """``read_dicom`` → ``deidentify`` → ``write_dicom``: the de-identified file and data set."""
    original = read_dicom(data, max_bytes=max_bytes)
    try:
        ds = deidentify(original, key=key)
        return write_dicom(ds), ds
    except Exception:
        # Whatever a parseable but odd file does to the profile, it is refused, never a crash.
        raise Rejected("the file could not be de-identified") from None
