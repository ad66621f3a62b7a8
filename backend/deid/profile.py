"""The de-identification profile applied by every way in (see ``backend/deid/__init__.py`` and
``docs/deidentification.md``).

``read_dicom`` refuses hostile or unsupported files; ``deidentify`` applies PS3.15 Table E.1-1
(``table_e11``) with the Clean Descriptors and Retain Longitudinal Temporal Information with
Modified Dates options, and our rules by VR for everything the table does not list
(``table``); ``write_dicom`` serialises with a zeroed preamble and a rebuilt file meta. That
dataset path is the reference; the door calls ``deidentify_file``, which applies the same profile
to the encoded bytes (``backend.deid.fast``, ~6x cheaper) and hands any file that path does not
answer for to the dataset path (``deidentify_reference``), so both always give the same result.

UIDs are replaced by a keyed HMAC of the original (``2.25.<128-bit integer>``), so the same
original gets the same new UID in every process on every day with no mapping table, and
references between instances still resolve. Dates move by a keyed per-patient offset, which
keeps intervals within a patient; times are kept. The door keys all of it per site
(``site_key``): two hospitals' patient "12345", or one study sent to two sites, never link.

pydicom reports malformed values in warnings and log records that quote the value (a name, an
ID): while this module works on a file, those are silenced so no header value reaches a log.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import hashlib
import hmac
import io
import logging
import re
import warnings
from collections.abc import Iterator
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom._dicom_dict import DicomDictionary
from pydicom._uid_dict import UID_dictionary
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_fragments
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from backend.deid.safety import MAX_DEPTH, UnsafeFile, inflate_bounded, prescan
from backend.deid.table import KEEP, KEEP_UIDS, TYPE1_IN_ENHANCED_MR
from backend.deid.table_e11 import TABLE

if TYPE_CHECKING:
    from backend.deid.fast import DeidentifiedFile

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
ACCEPTED_SOP_CLASSES = {MR_IMAGE: "MR Image", ENHANCED_MR_IMAGE: "Enhanced MR Image"}
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
UNCOMPRESSED = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian}
IMPLEMENTATION_UID = UID("2.25.229390429870286331624939045418127361437")
IMPLEMENTATION_VERSION = "ARTISCAN_0_1"
DEFAULT_MAX_BYTES = 512 * 2**20
MAX_MATRIX = 4096
MAX_FRAMES = 4096
PSEUDONYM_PREFIX = "ANON-"
DEIDENTIFICATION_METHOD = "ArtiScan PS3.15 E.1-1 Basic + Clean Descriptors + Modified Dates"
METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113105", "Clean Descriptors Option"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)
# Executable or archive signatures in the preamble: a file that is also a program (CVE-2019-11687).
POLYGLOT_MAGIC = (
    b"MZ",
    b"\x7fELF",
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
    b"#!",
    b"PK\x03\x04",
    b"%PDF",
)

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_UID_LOOSE = re.compile(r"^[0-9.]*$")
_DATES_IN_TEXT = (
    re.compile(r"\b(19|20)\d{2}[-./]?(0[1-9]|1[0-2])[-./]?(0[1-9]|[12]\d|3[01])\b"),
    re.compile(r"\b(0?[1-9]|[12]\d|3[01])[-./](0?[1-9]|1[0-2])[-./](19|20)?\d{2}\b"),
    re.compile(r"\b(0?[1-9]|1[0-2])[-./](0?[1-9]|[12]\d|3[01])[-./](19|20)?\d{2}\b"),
)
_LONG_NUMBER = re.compile(r"\d{5,}")
_TEXT_VRS = {"LO", "SH", "LT", "ST", "UT", "UC", "AE", "UR", "PN", "AS"}
_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW", "US or OW"}
_STRING_DUMMY = "ANONYMIZED"
_PN_DUMMY = "ANONYMOUS"
_IDENTIFYING_KEYWORDS = (
    "PatientID",
    "OtherPatientIDs",
    "AccessionNumber",
    "StudyID",
    "IssuerOfPatientID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    "AdmissionID",
    "MedicalRecordLocator",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "RequestedProcedureID",
    "ScheduledProcedureStepID",
    "PerformedProcedureStepID",
)
_PN_KEYWORDS = frozenset(entry[4] for entry in DicomDictionary.values() if entry[0] == "PN")
"""Attributes that hold a person's name by definition, whatever VR a file gives them."""

logger = logging.getLogger(__name__)
_quiet = contextvars.ContextVar("artiscan_deid_quiet", default=False)


class _DropWhileQuiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _quiet.get()


logging.getLogger("pydicom").addFilter(_DropWhileQuiet())


@contextlib.contextmanager
def _no_value_reports() -> Iterator[None]:
    """Silence pydicom's warnings and log records (they quote header values) in this block."""
    token = _quiet.set(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _quiet.reset(token)


class Rejected(Exception):
    """A file ArtiScan will not take; ``reason`` is short and never quotes header values."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- reading --------------------------------------------------------------------------------


def read_dicom(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Dataset:
    """Parse one DICOM Part 10 file, refusing anything hostile, unsupported or not an MR image.

    Every declared length is checked against the bytes present before pydicom reads it,
    sequences deeper than ``safety.MAX_DEPTH`` are refused, and deflated data is inflated with a
    budget (``safety.inflate_bounded``), so memory stays a small multiple of the file's size
    whatever it declares. Every element is decoded here, so a malformed value fails now, as a
    ``Rejected``, not later in the caller.
    """
    with _no_value_reports():
        return _read(data, max_bytes)


def _read(data: bytes, max_bytes: int) -> Dataset:
    meta, syntax, body, start = _open(data, max_bytes)
    explicit, little = syntax != ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian
    try:
        stream = io.BytesIO(body)
        stream.seek(start)
        ds = read_dataset(stream, is_implicit_VR=not explicit, is_little_endian=little)
        del stream, body
        _check_depth(ds)
        for _element in ds.iterall():  # decode every element now, nested ones included
            pass
    except Rejected:
        raise
    except Exception:
        raise Rejected("malformed data set") from None
    ds.file_meta = meta
    ds.set_original_encoding(not explicit, little)
    _check_image(ds, syntax)
    return ds


def _open(data: bytes, max_bytes: int) -> tuple[FileMetaDataset, UID, bytes, int]:
    """The checks before the data set is parsed (size, DICM, preamble, file meta, syntax,
    bounded inflation, ``safety.prescan``): the file meta, the transfer syntax, the data set's
    bytes (inflated if they were deflated) and where the data set starts in them. Shared by the
    dataset path and the fast path (``backend.deid.fast``), so both refuse alike."""
    _check_envelope(data, max_bytes)
    meta, syntax, media_class, start = _read_meta(data)
    body, start = _open_body(data, syntax, media_class, start, max_bytes)
    return meta, syntax, body, start


def _check_envelope(data: bytes, max_bytes: int) -> None:
    if not data:
        raise Rejected("empty file")
    if len(data) > max_bytes:
        raise Rejected(f"file larger than the {max_bytes // 2**20} MiB limit")
    if len(data) < 132 or data[128:132] != b"DICM":
        raise Rejected("not a DICOM Part 10 file (no DICM marker)")
    if data.startswith(POLYGLOT_MAGIC):
        raise Rejected("executable or archive code in the preamble (polyglot file)")


def _read_meta(data: bytes) -> tuple[FileMetaDataset, UID, str, int]:
    """The file meta, its transfer syntax and media storage class, and where the data set starts."""
    fp = io.BytesIO(data)
    try:
        read_preamble(fp, force=False)
        meta = _read_file_meta_info(fp)
        for _element in meta:  # decode every element now: a bad VR must fail here, not later
            pass
        syntax = UID(str(meta.get("TransferSyntaxUID", "")).strip())
        media_class = str(meta.get("MediaStorageSOPClassUID", "")).strip()
    except Exception:
        raise Rejected("unreadable file meta information") from None
    return meta, syntax, media_class, fp.tell()


def _open_body(
    data: bytes, syntax: UID, media_class: str, start: int, max_bytes: int
) -> tuple[bytes, int]:
    if media_class == DICOMDIR_CLASS:
        raise Rejected("a DICOMDIR (its paths are never followed)")
    if not _syntax_supported(syntax):
        raise Rejected("unsupported transfer syntax")
    body = data
    explicit, little = syntax != ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian
    try:
        if syntax == DeflatedExplicitVRLittleEndian:
            body = inflate_bounded(data[start:], limit=inflate_budget(len(data), max_bytes))
            start = 0
        prescan(body, start, explicit=explicit, little=little)
    except UnsafeFile as unsafe:
        raise Rejected(unsafe.reason) from None
    return body, start


def inflate_budget(compressed_size: int, max_bytes: int) -> int:
    """How far a deflated file may inflate: ``max_bytes``, but no more than 64 times its
    compressed size with a 32 MiB floor. Real MR deflates 2-5x (noise does not compress); a
    bomb of a few hundred KB is refused after 32 MiB instead of after ``max_bytes``."""
    return min(max_bytes, max(32 * 2**20, 64 * compressed_size))


def _syntax_supported(syntax: UID) -> bool:
    if syntax in UNCOMPRESSED or syntax == DeflatedExplicitVRLittleEndian:
        return True
    if not syntax.is_valid or not syntax.is_transfer_syntax or not syntax.is_compressed:
        return False
    try:
        return bool(get_decoder(syntax).is_available)
    except Exception:  # pydicom has no decoder for it at all
        return False


def supported_transfer_syntaxes() -> list[str]:
    """Every transfer syntax the door takes, the uncompressed ones first: little and big endian,
    deflated, and each compressed one (RLE, JPEG, JPEG-LS, JPEG 2000, HTJ2K) that an installed
    pydicom decoder plugin decodes."""
    from pydicom.uid import AllTransferSyntaxes

    first = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
             DeflatedExplicitVRLittleEndian]  # fmt: skip
    compressed = [UID(u) for u in AllTransferSyntaxes if UID(u) not in first]
    return [str(u) for u in first + [u for u in compressed if _syntax_supported(u)]]


def _check_depth(ds: Dataset) -> None:
    """Implicit VR sequences of defined length are not walked by ``prescan``: check here."""
    pending: list[tuple[Dataset, int]] = [(ds, 0)]
    while pending:
        current, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise Rejected(f"sequences nested deeper than {MAX_DEPTH} levels")
        for element in current:
            if element.VR == "SQ":
                pending.extend((item, depth + 1) for item in element.value)


def image_type_refusal(values: list[str]) -> str | None:
    """Why an image of this ImageType is refused, or None (security checklist D-09): a screen
    save (any value naming SAVE) or a derived secondary image (DERIVED\\SECONDARY: a reformat,
    a capture, a post-processed picture) may carry burned-in text whatever BurnedInAnnotation
    says, and is not an acquisition whose artifacts the model judges; it goes to the quarantine
    for a person to review, never to clean storage. DERIVED\\PRIMARY (an ADC or a subtraction
    map) and ORIGINAL images pass."""
    words = [v.strip().upper() for v in values]
    if any("SAVE" in w for w in words):
        return "a screen save (ImageType): may show patient data in the pixels"
    if words[:2] == ["DERIVED", "SECONDARY"]:
        return "a derived secondary image (ImageType): may show patient data in the pixels"
    return None


NOT_THE_HEAD = frozenset(
    # BodyPartExamined defined terms (PS3.16 CID 4031 and the Annex L terms scanners write)
    # that name a part other than the head: such a series is not what the model judges.
    "ABDOMEN ABDOMENPELVIS ANKLE AORTA ARM BACK BLADDER BREAST BUTTOCK CALF CHEST CHESTABDOMEN "
    "CHESTABDPELVIS CLAVICLE COCCYX CSPINE ELBOW EXTREMITY FEMUR FIBULA FINGER FOOT FOREARM "
    "HAND HEART HIP HUMERUS KIDNEY KNEE LEG LIVER LSPINE LUNG PANCREAS PELVIS PENIS PROSTATE "
    "RECTUM RIB SACRUM SCAPULA SCROTUM SHOULDER SPINE SPLEEN SSPINE STERNUM THIGH TIBIA TOE "
    "TSPINE UPRARM URETER UTERUS WHOLEBODY WRIST".split()
)


def body_part_refusal(value: str) -> str | None:
    """Why an image of this BodyPartExamined is refused, or None: the model judges brain MR, so
    a series that says it shows another part (a knee, a spine) is refused with that reason
    rather than scored. The head in any of its terms (HEAD, BRAIN, SKULL, HEADNECK, IAC,
    ORBIT, …), an absent value and a value we do not know pass: many brain series carry none,
    or free text."""
    part = value.strip().upper().replace(" ", "")
    if part in NOT_THE_HEAD:
        return f"not a brain image (BodyPartExamined {part}): only brain MR is scored"
    return None


def _image_type_values(ds: Dataset) -> list[str]:
    value = ds.get("ImageType")
    if value is None:
        return []
    if isinstance(value, str):
        return value.split("\\")
    return [str(v) for v in value]  # a MultiValue


def _check_image(ds: Dataset, syntax: UID) -> None:
    try:
        sop_class = str(ds.get("SOPClassUID", "")).strip()
        if sop_class == DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
            raise Rejected("a DICOMDIR (its paths are never followed)")
        if sop_class not in ACCEPTED_SOP_CLASSES:
            raise Rejected("not an MR image (only MR and Enhanced MR Image Storage are accepted)")
        if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
            raise Rejected("burned-in annotation (may show patient data in the pixels)")
        refusal = image_type_refusal(_image_type_values(ds)) or body_part_refusal(
            str(ds.get("BodyPartExamined", "") or "")
        )
        if refusal:
            raise Rejected(refusal)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            value = str(ds.get(keyword, ""))
            if not value or len(value) > 64 or not _UID.match(value):
                raise Rejected(f"missing or malformed {keyword}")
        for element in ds.iterall():
            if element.VR == "UI" and element.value:
                values = element.value if element.VM > 1 else [element.value]
                if not all(_UID_LOOSE.match(str(v).strip("\x00 ")) for v in values):
                    raise Rejected("a UID with characters other than digits and dots")
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
    if syntax.is_compressed and syntax != DeflatedExplicitVRLittleEndian:
        _check_encapsulated(ds.PixelData, frames)
        return
    expected = rows * columns * samples * frames * bits // 8
    actual = len(ds.PixelData)
    if actual not in (expected, expected + 1):
        raise Rejected("pixel data length disagrees with Rows x Columns x bits")


def _check_encapsulated(pixel_data: bytes, frames: int) -> None:
    """Compressed pixel data is not decoded at the door; its framing must still add up."""
    try:
        fragments = list(generate_fragments(pixel_data))
    except Exception:
        raise Rejected("encapsulated pixel data is malformed") from None
    if not fragments:
        raise Rejected("encapsulated pixel data has no offset table")
    offsets, data_fragments = fragments[0], fragments[1:]
    if offsets and len(offsets) // 4 != frames:
        raise Rejected("encapsulated pixel data disagrees with the number of frames")
    if len(data_fragments) < frames:
        raise Rejected("encapsulated pixel data has fewer fragments than frames")


# --- keyed pseudonyms -------------------------------------------------------------------------


def _mac(key: bytes, label: str, value: str) -> bytes:
    return hmac.new(key, f"{label}|{value}".encode(), hashlib.sha256).digest()


def pseudonymous_uid(uid: str, *, key: bytes) -> str:
    """``2.25.<128-bit integer>`` from a keyed HMAC of ``uid`` (at most 44 characters)."""
    return "2.25." + str(int.from_bytes(_mac(key, "uid", uid.strip("\x00 ")), "big") >> 128)


@functools.lru_cache(maxsize=256)
def site_key(key: bytes, site: str) -> bytes:
    """The de-identification key of one site, derived from the installation's ``key``: the door
    de-identifies a site's files with it (``site``: the site's primary key, which never
    changes), so its UIDs, patient pseudonyms, date shifts and scanner pseudonyms are its own —
    the same PatientID sent by two sites (two hospitals' "12345") becomes two patients, and the
    same study sent to two sites two studies whose copies nobody can link without the key —
    while within a site everything stays consistent across processes and days (security
    checklist A-06, D-04). The ``deidentify`` command, which serves no site, uses ``key``."""
    return _mac(key, "site", site)


def _patient_source(ds: Dataset) -> str:
    return patient_source(str(ds.get("PatientID", "")), str(ds.get("StudyInstanceUID", "")))


def patient_source(patient_id: str, study_uid: str) -> str:
    """What a file's patient pseudonym and date shift are keyed on: its PatientID, or, for a
    file without one (an empty PatientID is legal: the attribute is Type 2), its study — one
    unknown patient per study. Never a shared "unknown" patient (nor the PatientName, which
    de-identified collections fill with the same "ANONYMOUS"): that would make every file
    without an ID one patient, with one pseudonym and one date shift (security checklist
    D-11). The NULs keep it apart from any PatientID a sender can write."""
    patient_id = patient_id.strip()
    return patient_id if patient_id else "\0study\0" + study_uid.strip("\0 ")


def patient_pseudonym(ds: Dataset, *, key: bytes) -> str:
    """``ANON-`` and 12 hex digits of a keyed HMAC of the original PatientID (of the study if
    there is no ID: ``patient_source``), so one patient's series still group and nobody without
    the key can link."""
    return _pseudonym_of(_patient_source(ds), key)


def _pseudonym_of(source: str, key: bytes) -> str:
    return PSEUDONYM_PREFIX + _mac(key, "patient", source or "unknown").hex()[:12].upper()


def date_shift_days(ds: Dataset, *, key: bytes) -> int:
    """A keyed per-patient shift of 1 to 3650 days into the past (from the original PatientID)."""
    return _days_of(_patient_source(ds), key)


def _days_of(source: str, key: bytes) -> int:
    return 1 + int.from_bytes(_mac(key, "dates", source or "unknown")[:4], "big") % 3650


SCANNER_KEYWORDS = ("StationName", "DeviceSerialNumber", "Manufacturer", "ManufacturerModelName")


def scanner_pseudonym_from(ds: Dataset, *, key: bytes) -> str:
    """A keyed pseudonym of the scanner (station name, serial number, model), taken from the
    original before de-identification removes them; empty if nothing names the scanner."""
    return _scanner_of([str(ds.get(k, "")).strip() for k in SCANNER_KEYWORDS], key)


def _scanner_of(parts: list[str], key: bytes) -> str:
    if not any(parts[:2]):
        return ""
    return _mac(key, "scanner", "|".join(parts)).hex()[:16]


# --- the profile ----------------------------------------------------------------------------


class _Context:
    def __init__(self, original: Dataset, key: bytes) -> None:
        self.key = key
        self.days = date_shift_days(original, key=key)
        self.forbidden = _identifying_words(original)
        self.enhanced = str(original.get("SOPClassUID", "")) == ENHANCED_MR_IMAGE


def deidentify(original: Dataset, *, key: bytes, in_place: bool = False) -> Dataset:
    """Apply the profile to a copy of ``original`` (as returned by ``read_dicom``), or to
    ``original`` itself with ``in_place=True`` (saves a copy of the header; the pixel bytes are
    shared either way).

    Raises ``Rejected`` if anything in the file defeats the profile: a file is de-identified
    completely or not at all (with ``in_place``, a refused ``original`` is left half-done and
    must be discarded).
    """
    with _no_value_reports():
        try:
            return _deidentify(original, key, in_place)
        except Rejected:
            raise
        except Exception:
            raise Rejected("the file could not be de-identified") from None


def _deidentify(original: Dataset, key: bytes, in_place: bool) -> Dataset:
    # Everything taken from the original is taken before the profile touches it.
    context = _Context(original, key)
    pseudonym = patient_pseudonym(original, key=key)
    syntax = UID(str(original.file_meta.TransferSyntaxUID))
    embedded = embedded_overlays(original)
    ds = original if in_place else copy.deepcopy(original)  # bytes (the pixels) are shared
    _apply(ds, context, depth=0)

    ds.PatientName = pseudonym
    ds.PatientID = pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    codes = Sequence()
    for value, meaning in METHOD_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes

    if syntax == ExplicitVRBigEndian:
        _pixels_to_little_endian(ds)
    if embedded:
        if syntax.is_compressed and syntax != DeflatedExplicitVRLittleEndian:
            raise Rejected("an overlay embedded in compressed pixel data cannot be cleaned")
        _clear_unused_bits(ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    compressed = syntax.is_compressed and syntax != DeflatedExplicitVRLittleEndian
    meta.TransferSyntaxUID = syntax if compressed else ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    ds.set_original_encoding(False, True, ds.original_character_set)
    ds.preamble = b"\x00" * 128
    return ds


def _apply(ds: Dataset, context: _Context, *, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise Rejected(f"sequences nested deeper than {MAX_DEPTH} levels")
    for element in list(ds):
        tag = element.tag
        if tag.is_private or 0x5000 <= tag.group <= 0x50FF or 0x6000 <= tag.group <= 0x60FF:
            # Private attributes (at every depth), curves and overlays: Table E.1-1 says X.
            del ds[tag]
            continue
        row = TABLE.get(int(tag))
        if row is not None:
            _apply_row(ds, element, row.basic, row.clean_descriptors, row.modified_dates, context,
                       depth)  # fmt: skip
        else:
            _apply_unlisted(ds, element, context, depth)


def _apply_row(
    ds: Dataset,
    element: DataElement,
    basic: str,
    clean: bool,
    modified_dates: bool,
    context: _Context,
    depth: int,
) -> None:
    vr = element.VR
    if modified_dates:  # Retain Longitudinal Temporal Information with Modified Dates
        if vr in ("DA", "DT"):
            element.value = _shift_values(element, context.days)
        elif vr != "TM":  # times are kept as they are
            del ds[element.tag]
        return
    if clean:  # Clean Descriptors
        if vr == "SQ":
            for item in element.value:
                _apply(item, context, depth=depth + 1)
        elif vr in _TEXT_VRS and vr not in ("PN", "AS"):
            element.value = _clean_values(element, context.forbidden)
        else:
            del ds[element.tag]
        return
    if basic == "U":
        element.value = _map_uids(element, context.key) if element.value else element.value
    elif basic == "X/Z/U*":  # a sequence of references: kept, its UIDs replaced
        if vr == "SQ":
            for item in element.value:
                _apply(item, context, depth=depth + 1)
        else:
            del ds[element.tag]
    elif basic in ("Z", "Z/D"):
        element.value = Sequence() if vr == "SQ" else None
    elif basic == "D" or (
        basic in ("X/D", "X/Z/D") and context.enhanced and element.keyword in TYPE1_IN_ENHANCED_MR
    ):
        _dummy(ds, element, context, depth)
    else:  # X, X/Z, X/D, X/Z/D: nothing in the MR IODs needs these present
        del ds[element.tag]


def _dummy(ds: Dataset, element: DataElement, context: _Context, depth: int) -> None:
    vr = element.VR
    if vr == "SQ":  # items kept, everything inside them cleaned
        for item in element.value:
            _apply(item, context, depth=depth + 1)
    elif vr == "PN":
        element.value = _PN_DUMMY
    elif vr in ("LO", "SH", "LT", "ST", "UT", "UC", "CS"):
        element.value = _STRING_DUMMY
    elif vr == "UI":
        element.value = _map_uids(element, context.key) if element.value else element.value
    elif vr in ("DA", "DT"):
        element.value = _shift_values(element, context.days)
    elif vr == "TM":
        element.value = "000000"
    elif vr in ("IS", "DS"):
        element.value = "0"
    else:
        del ds[element.tag]  # no meaningful dummy (binary, AE, AS, UR): removed


def _apply_unlisted(ds: Dataset, element: DataElement, context: _Context, depth: int) -> None:
    """Attributes Table E.1-1 does not list: keep only what cannot carry a person."""
    vr, keyword = element.VR, element.keyword
    if not keyword and element.tag.group != 0x7FE0:
        del ds[element.tag]  # unknown to the dictionary: cannot be judged, so removed
    elif vr == "SQ":
        for item in element.value:
            _apply(item, context, depth=depth + 1)
    elif vr == "UI":
        if element.value and not _is_standard_uid(element):
            element.value = _map_uids(element, context.key)
    elif vr in ("DA", "DT"):
        element.value = _shift_values(element, context.days)
    elif (vr in _TEXT_VRS or vr in _BINARY_VRS) and keyword not in KEEP:
        # Names, free text and opaque bytes not known to be safe go, whatever the attribute is.
        del ds[element.tag]


def _is_standard_uid(element: DataElement) -> bool:
    if element.keyword in KEEP_UIDS:
        return True
    values = element.value if element.VM > 1 else [element.value]
    return all(str(v) in UID_dictionary for v in values)


def _map_uids(element: DataElement, key: bytes) -> str | list[str]:
    values = element.value if element.VM > 1 else [element.value]
    mapped = [pseudonymous_uid(str(v), key=key) for v in values]
    return mapped if element.VM > 1 else mapped[0]


def _shift_date(value: str, days: int) -> str:
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit():
        return ""
    try:
        moved = date(int(text[:4]), int(text[4:6]), int(text[6:8])) - timedelta(days=days)
    except (ValueError, OverflowError):
        return ""
    return moved.strftime("%Y%m%d") + text[8:]  # a DT keeps its time and offset


def _shift_values(element: DataElement, days: int) -> str | list[str]:
    values = element.value if element.VM > 1 else [element.value]
    shifted = [_shift_date(str(v or ""), days) for v in values]
    return shifted if element.VM > 1 else shifted[0]


def _clean_text(value: str, forbidden: list[re.Pattern[str]]) -> str:
    cleaned = value
    for pattern in forbidden:
        cleaned = pattern.sub("", cleaned)
    for dates in _DATES_IN_TEXT:
        cleaned = dates.sub("", cleaned)
    cleaned = _LONG_NUMBER.sub("", cleaned)
    return re.sub(r"\s{2,}", " ", cleaned).strip(" ^_-,;:")


def _clean_values(element: DataElement, forbidden: list[re.Pattern[str]]) -> str | list[str]:
    values = element.value if element.VM > 1 else [element.value]
    cleaned = [_clean_text(str(v or ""), forbidden) for v in values]
    return cleaned if element.VM > 1 else cleaned[0]


_UNREADABLE = "\ufffd"
"""What pydicom puts for bytes it could not decode in the declared character set."""

_EVERYTHING = re.compile(r"(?s).+")


def _identifying_words(ds: Dataset) -> list[re.Pattern[str]]:
    """Every name part, ID and site name anywhere in the original (nested ones included), as
    case-insensitive whole-word patterns, longest first: what Clean Descriptors cuts out."""
    words: set[str] = set()
    for element in ds.iterall():
        _add_words(words, element.VR, element.keyword, element.value)
    return _word_patterns(words)


def _add_words(words: set[str], vr: str, keyword: str, value: Any) -> None:
    """The identifying words in one element's (decoded) value."""
    values: list[Any]
    if isinstance(value, (list, MultiValue)):
        values = list(value)
    else:
        values = [value]
    if vr == "PN" or keyword in _PN_KEYWORDS or keyword in _IDENTIFYING_KEYWORDS:
        if any(_UNREADABLE in str(v or "") for v in values):
            words.add(_UNREADABLE)  # see _word_patterns
    if vr == "PN" or keyword in _PN_KEYWORDS:
        # A person's name even when a sender wrote it with another VR (LO, SH, UN read as text).
        for v in values:
            if v:
                words.update(w for w in re.split(r"[\^\s,=.]+", str(v)) if len(w) >= 2)
    elif keyword in _IDENTIFYING_KEYWORDS:
        for v in values:
            text = str(v or "").strip()
            if len(text) >= 3:
                words.add(text)
                words.update(w for w in re.split(r"[\s,]+", text) if len(w) >= 4)


def _word_patterns(words: set[str]) -> list[re.Pattern[str]]:
    if any(_UNREADABLE in w for w in words):
        # A name or ID that did not decode cleanly (a character set the sender misdeclared or
        # misused) cannot be searched for reliably: the descriptors lose all their text instead.
        return [_EVERYTHING]
    return [
        re.compile(r"(?<!\w)" + re.escape(w) + r"(?!\w)", re.IGNORECASE)
        for w in sorted(words, key=len, reverse=True)
    ]


def embedded_overlays(ds: Dataset) -> bool:
    """Whether ``ds`` declares an overlay kept in the unused bits of its pixel cells (retired,
    PS3.3 C.9.2: a group 60xx with an OverlayBitPosition and no OverlayData of its own). Old
    scanners drew names and dates so; removing group 60xx leaves those bits in the pixels."""
    for group in range(0x6000, 0x6020, 2):
        if (group << 16 | 0x0102) in ds and (group << 16 | 0x3000) not in ds:
            return True
    return False


def _clear_unused_bits(ds: Dataset) -> None:
    """Set the bits of each pixel cell outside [HighBit - BitsStored + 1, HighBit] as an image
    without overlays has them (zero, or the sign's copies above HighBit for signed pixels): what
    a reader makes of the pixels is unchanged, an embedded overlay is gone."""
    bits, stored = int(ds.BitsAllocated), int(ds.BitsStored)
    high = int(ds.get("HighBit", stored - 1))
    low = high - stored + 1
    if bits not in (8, 16, 32) or not 0 <= low <= high < bits or stored == bits:
        return
    width = bits // 8
    cells = np.frombuffer(ds.PixelData[: len(ds.PixelData) // width * width], f"<u{width}")
    ones = (1 << bits) - 1
    kept = cells & np.asarray(((1 << stored) - 1) << low, cells.dtype)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        above = np.asarray(ones & ~((1 << (high + 1)) - 1), cells.dtype)
        negative = (cells >> np.asarray(high, cells.dtype)) & np.asarray(1, cells.dtype)
        kept = kept | (negative * above)
    tail = ds.PixelData[len(cells) * width :]
    ds.PixelData = kept.astype(f"<u{width}").tobytes() + bytes(tail)


def _pixels_to_little_endian(ds: Dataset) -> None:
    """Big endian input is written little endian: swap the pixel words (the only binary value
    the profile keeps); every other kept value was decoded to Python numbers or text."""
    bits = int(ds.BitsAllocated)
    if bits > 8:
        width = bits // 8
        words = np.frombuffer(ds.PixelData[: len(ds.PixelData) // width * width], f">u{width}")
        ds.PixelData = words.astype(f"<u{width}").tobytes()
        ds["PixelData"].VR = "OW"


# --- writing --------------------------------------------------------------------------------


def write_dicom(ds: Dataset) -> bytes:
    """A Part 10 file: zeroed preamble, the file meta built by ``deidentify``."""
    with _no_value_reports():
        try:
            out = io.BytesIO()
            ds.preamble = b"\x00" * 128
            ds.save_as(out, enforce_file_format=True)
            return out.getvalue()
        except Exception:
            raise Rejected("the de-identified file could not be written") from None


def deidentify_reference(
    data: bytes, *, key: bytes, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[bytes, Dataset]:
    """The dataset path, whole: ``read_dicom`` -> ``deidentify`` -> ``write_dicom``. What
    ``deidentify_file`` falls back to, and the tests' oracle for the fast path."""
    ds = deidentify(read_dicom(data, max_bytes=max_bytes), key=key, in_place=True)
    return write_dicom(ds), ds


def deidentify_file(
    data: bytes, *, key: bytes, max_bytes: int = DEFAULT_MAX_BYTES
) -> DeidentifiedFile:
    """De-identify one file for the door: the de-identified file, its data set and the scanner
    pseudonym of the original (``scanner_pseudonym_from``), or ``Rejected``.

    The same profile and the same refusals as the dataset path (``deidentify_reference``), about
    five times cheaper: ``backend.deid.fast`` works on the encoded bytes, and hands any file it
    does not answer for (big endian, an out-of-order or ambiguous element, anything the dataset
    path would refuse) to the dataset path.
    """
    from backend.deid.fast import DeidentifiedFile, Fallback, deidentify_fast  # it imports us

    with _no_value_reports():
        try:
            return deidentify_fast(data, key=key, max_bytes=max_bytes)
        except Rejected:  # by the checks both paths share (profile._open)
            raise
        except Fallback:
            pass
        except Exception as error:  # a file the fast path trips on: the dataset path decides
            logger.warning("de-identification fast path failed (%s)", type(error).__name__)
        scanner_of: list[str] = []

        def original_scanner(ds: Dataset) -> Dataset:
            scanner_of.append(scanner_pseudonym_from(ds, key=key))
            return ds

        ds = deidentify(original_scanner(read_dicom(data, max_bytes=max_bytes)), key=key,
                        in_place=True)  # fmt: skip
        return DeidentifiedFile(data=write_dicom(ds), ds=ds, scanner=scanner_of[0])


def deidentify_bytes(
    data: bytes, *, key: bytes, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[bytes, Dataset]:
    """``read_dicom`` → ``deidentify`` → ``write_dicom``: the de-identified file and data set
    (through ``deidentify_file``'s fast path; the same result)."""
    result = deidentify_file(data, key=key, max_bytes=max_bytes)
    return result.data, result.ds
