"""The fast path (``backend/deid/fast.py``) against the dataset path it replaces at the door
(``profile.deidentify_reference``: ``read_dicom`` -> ``deidentify`` -> ``write_dicom``), the
oracle: on every file, the same refusal with the same reason, or the same de-identified data set
(every element, at every depth, and the file meta). Where the fast path answers for a file
itself (it hands the rest to the dataset path), the bytes are the same too."""

from __future__ import annotations

import io
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from backend.deid import fast
from backend.deid.profile import (
    DEFAULT_MAX_BYTES,
    Rejected,
    deidentify_bytes,
    deidentify_file,
    deidentify_reference,
    read_dicom,
    scanner_pseudonym_from,
    site_key,
)
from tests.deid.builders import (
    MUTATIONS,
    as_acquired,
    enhanced_mr_dataset,
    mr_dataset,
    mutate,
    to_bytes,
    with_more_phi,
)

KEY = b"k" * 32
CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"
CORPUS_FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file())
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]


def _elements(ds: Dataset) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for element in ds:
        if element.VR == "SQ":
            rows.append((element.tag, "SQ", [_elements(item) for item in element.value]))
        else:
            rows.append((element.tag, element.VR, element.value))
    return rows


def _parsed(data: bytes) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    ds = pydicom.dcmread(io.BytesIO(data))
    return _elements(ds.file_meta), _elements(ds)


def _outcome(door: Any, data: bytes) -> bytes | str:
    try:
        return door(data, key=KEY)[0]
    except Rejected as refused:
        return "refused: " + refused.reason


def assert_same(data: bytes) -> bytes | str:
    """The door and the oracle agree on ``data``; the door's output (or refusal)."""
    expected = _outcome(deidentify_reference, data)
    got = _outcome(deidentify_bytes, data)
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected
        return got
    assert got[:128] == bytes(128) and got[128:132] == b"DICM"
    assert _parsed(got) == _parsed(expected)
    return got


def assert_fast_and_identical(data: bytes) -> None:
    """The fast path answers for ``data`` itself, with the oracle's very bytes."""
    result = fast.deidentify_fast(data, key=KEY, max_bytes=DEFAULT_MAX_BYTES)
    expected = deidentify_reference(data, key=KEY)[0]
    assert result.data == expected
    # The data set handed back is the clean file's, as a reader of the stored file sees it.
    assert (_elements(result.ds.file_meta), _elements(result.ds)) == _parsed(expected)


def _phi_mr() -> Dataset:
    return with_more_phi(mr_dataset())


BUILDERS = {"mr": mr_dataset, "phi": _phi_mr, "enhanced": enhanced_mr_dataset}


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
@pytest.mark.parametrize("builder", list(BUILDERS), ids=str)
def test_the_fast_path_answers_for_the_builders_files_with_the_oracles_bytes(builder, syntax):
    assert_fast_and_identical(to_bytes(BUILDERS[builder](), syntax))


def test_the_fast_path_keeps_an_rle_file_compressed_with_the_oracles_bytes():
    original = mr_dataset()
    original.file_meta = FileMetaDataset()
    original.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    original.compress(RLELossless, generate_instance_uid=False)
    assert_fast_and_identical(to_bytes(original, RLELossless))


def test_the_door_reports_the_scanner_pseudonym_of_the_original():
    data = to_bytes(mr_dataset())
    expected = scanner_pseudonym_from(read_dicom(data), key=KEY)
    assert expected and deidentify_file(data, key=KEY).scanner == expected
    big_endian = _big_endian(mr_dataset())  # through the dataset path: the same
    assert deidentify_file(big_endian, key=KEY).scanner == expected


@pytest.mark.parametrize(
    "path", CORPUS_FILES, ids=[str(p.relative_to(CORPUS)) for p in CORPUS_FILES]
)
def test_every_corpus_file_gets_the_oracles_outcome(path):
    assert_same(path.read_bytes())


def test_the_corpus_mr_images_are_answered_by_the_fast_path():
    for name in ("MR_small.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm"):
        assert_fast_and_identical(as_acquired((CORPUS / name).read_bytes()))


def _big_endian(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=False, enforce_file_format=True)
    return out.getvalue()


def test_a_big_endian_file_goes_the_dataset_path_with_the_same_result():
    data = _big_endian(mr_dataset())
    with pytest.raises(fast.Fallback):
        fast.deidentify_fast(data, key=KEY, max_bytes=DEFAULT_MAX_BYTES)
    assert_same(data)


def _with_charset(charset: str, family: str, given: str, words: str) -> Dataset:
    ds = with_more_phi(mr_dataset())
    ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    ds.PatientName = f"{family}^{given}"
    ds.StudyDescription = f"IRM {words} {family}"
    ds.SeriesDescription = f"{given} T2"
    ds.ImageComments = f"{family} {words}"
    ds.InstitutionName = f"Hôpital {family}" if "2022" not in charset else f"病院 {family}"
    return ds


@pytest.mark.parametrize(
    "charset, family, given, words",
    [
        ("ISO_IR 100", "Müller-Lüdenscheidt", "Zoë", "crâne été"),
        ("ISO_IR 192", "Ωμέγα", "李明", "脑部 磁共振"),
        ("ISO_IR 192", "Dupré", "José", "tête"),
        ("\\ISO 2022 IR 87", "ヤマダ", "タロウ", "頭部"),
        # One value only: pydicom then writes the name's carets inside the JIS mode, and reads the
        # name back with replacement characters; the descriptions still hold the name's bytes.
        ("ISO 2022 IR 87", "ヤマダ", "タロウ", "頭部"),
    ],
    ids=[
        "latin-1",
        "utf-8 greek and chinese",
        "utf-8 accents",
        "iso 2022 japanese",
        "iso 2022 japanese, one value",
    ],
)
def test_names_and_descriptions_in_other_character_sets_get_the_oracles_outcome(
    charset, family, given, words
):
    ds = _with_charset(charset, family, given, words)
    for syntax in SYNTAXES:
        data = to_bytes(ds, syntax)
        assert_same(data)
        assert_fast_and_identical(data)
        out = deidentify_bytes(data, key=KEY)[0]
        for leak in (family, given):
            for encoding in ("utf-8", "latin-1", "iso2022_jp"):
                try:
                    encoded = leak.encode(encoding)
                except UnicodeEncodeError:
                    continue
                assert encoded not in out
                if encoding == "iso2022_jp" and encoded.startswith(b"\x1b$B"):
                    assert encoded[3:-3] not in out  # the JIS bytes between the escapes


def test_an_item_with_its_own_character_set_gets_the_oracles_outcome():
    ds = mr_dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 192"
    item.PatientName = "Ωμέγα^Zoë"
    item.ContentDescription = "Ωμέγα study"
    ds.OtherPatientIDsSequence = Sequence([item])
    ds.StudyDescription = "Ωμέγα brain".encode().decode("latin-1")
    for syntax in SYNTAXES:
        assert_same(to_bytes(ds, syntax))


@pytest.mark.parametrize(
    "patient_id, patient_name",
    [
        (b"", b"DOE^JOHN=\x1b$B%d%^%@\x1b(B"),  # an escape sequence, no character set
        (b"PID\x00 ", b"DOE^JOHN^^ "),  # trailing padding of both kinds
        (b"  PID  ", b"DOE\\ROE"),  # spaces around; two names
        (b"A\\B", b""),  # two IDs
        (b"", b""),  # nobody
    ],
)
def test_the_patient_pseudonym_and_date_shift_come_from_the_same_decoded_source(
    patient_id, patient_name
):
    ds = mr_dataset()
    ds.StudyDescription = "DOE PID study"
    data = to_bytes(ds)
    for keyword, raw in (("PatientID", patient_id), ("PatientName", patient_name)):
        old = b"PID-CANARY-77 " if keyword == "PatientID" else b"ZQXCANARYFAMILY^QZGIVENCANARY "
        vr = b"LO" if keyword == "PatientID" else b"PN"
        before = vr + struct.pack("<H", len(old)) + old
        assert before in data
        data = data.replace(before, vr + struct.pack("<H", len(raw)) + raw, 1)
    assert_same(data)


def test_multi_valued_uids_and_dates_get_the_oracles_outcome():
    ds = with_more_phi(mr_dataset())
    ds.FailedSOPInstanceUIDList = ["1.2.826.0.1.3680043.8.498.7", "1.2.826.0.1.3680043.8.498.8"]
    ds.SOPClassesInStudy = ["1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.2"]
    ds.DateOfLastCalibration = ["20240101", "20240201"]
    ds.TimeOfLastCalibration = ["101010", "111111"]
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4\\1.2.3.5"
    ds.add_new(0x00181202, "DT", ["20240101101010", "20240202"])  # DateTimeOfLastCalibration
    ds.add_new(0x00400244, "DA", "")  # PerformedProcedureStepStartDate, empty
    ds.add_new(0x00081155, "UI", "")  # an empty UID
    for syntax in SYNTAXES:
        data = to_bytes(ds, syntax)
        assert_same(data)
        assert_fast_and_identical(data)


def _undefined_lengths(ds: Dataset) -> Dataset:
    for element in ds.iterall():
        if element.VR == "SQ":
            element.is_undefined_length = True
            for item in element.value:
                item.is_undefined_length_sequence_item = True
    return ds


def test_sequences_and_items_of_undefined_length_with_private_tags_inside():
    ds = _undefined_lengths(with_more_phi(mr_dataset()))
    data = to_bytes(ds)
    assert b"\xfe\xff\xdd\xe0" in data  # a sequence delimiter
    assert_fast_and_identical(data)
    out = deidentify_bytes(data, key=KEY)[0]
    assert b"PRIVATE-CANARY" not in out and b"DEEP-PRIVATE-CANARY" not in out


def test_an_odd_length_value_is_padded_as_the_oracle_pads_it():
    data = to_bytes(mr_dataset())
    odd = data.replace(b"LO\x08\x00SIEMENS ", b"LO\x07\x00SIEMENS", 1)
    assert odd != data
    assert_same(odd)
    out = fast.deidentify_fast(odd, key=KEY, max_bytes=DEFAULT_MAX_BYTES).data
    assert b"LO\x08\x00SIEMENS " in out


def test_us_or_ss_attributes_of_an_implicit_file_are_settled_as_pydicom_settles_them():
    for representation in (0, 1):
        ds = mr_dataset()
        ds.PixelRepresentation = representation
        ds.SmallestImagePixelValue = 0
        ds.LargestImagePixelValue = 4095
        data = to_bytes(ds, ImplicitVRLittleEndian)
        assert_fast_and_identical(data)


def test_private_groups_of_known_creators_in_an_implicit_file_are_read_as_pydicom_reads_them():
    # Implicit VR: a private element's VR comes from pydicom's private dictionary, through its
    # creator; a PN there feeds Clean Descriptors, a number of the wrong length is refused.
    ds = mr_dataset()
    ds.StudyDescription = "MR brain of Privatename"
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x08, "CS", "IMAGE NUM 4")
    block.add_new(0x0A, "US", 32)
    block.add_new(0x0B, "DS", "2.5")
    block.add_new(0x0E, "FD", [1.0, 0.0, 0.0])
    other = ds.private_block(0x0029, "ACME 1", create=True)
    other.add_new(0x01, "PN", "PRIVATENAME^PAT")  # no dictionary entry: UN, not a name
    data = to_bytes(ds, ImplicitVRLittleEndian)
    assert_fast_and_identical(data)
    short = bytearray(data)
    at = short.index(struct.pack("<HHI", 0x0019, 0x100E, 24))  # the FD triple: 20 bytes now
    short[at + 4 : at + 8] = struct.pack("<I", 20)
    del short[at + 8 : at + 12]
    assert_same(bytes(short))


def _raw_body_file(ds: Dataset, body: bytes) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = DicomBytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(out, meta)
    return out.getvalue() + body


def _explicit_body(ds: Dataset) -> bytes:
    out = DicomBytesIO()
    out.is_implicit_VR, out.is_little_endian = False, True
    write_dataset(out, ds)
    return out.getvalue()


def test_elements_out_of_order_or_repeated_go_the_dataset_path_with_the_same_result():
    ds = mr_dataset()
    body = _explicit_body(ds)
    extra = Dataset()
    extra.PatientID = "PID-CANARY-77"
    late = _explicit_body(extra)  # (0010,0020) again, after the pixel data
    for data in (_raw_body_file(ds, body + late), _raw_body_file(ds, late + body)):
        with pytest.raises(fast.Fallback):
            fast.deidentify_fast(data, key=KEY, max_bytes=DEFAULT_MAX_BYTES)
        out = assert_same(data)
        assert isinstance(out, str) or b"PID-CANARY-77" not in out


def test_an_explicit_un_element_gets_the_oracles_outcome():
    ds = with_more_phi(mr_dataset())
    ds.add_new(0x00091010, "UN", b"\x01\x02\x03\x04")  # private UN
    data = bytearray(to_bytes(ds))
    at = data.index(b"\x08\x00\x90\x10LO")  # ReferringPhysicianName: as UN
    header = struct.pack("<HH2sHI", 0x0008, 0x0090, b"UN", 0, data[at + 6])
    data[at : at + 8] = header
    assert_same(bytes(data))


def test_group_length_elements_in_the_data_set_get_the_oracles_outcome():
    ds = mr_dataset()
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        with_lengths = bytearray(to_bytes(ds, syntax))
        at = with_lengths.index(b"\x08\x00\x05\x00" if b"\x08\x00\x05\x00" in with_lengths
                                else b"\x08\x00\x16\x00")  # fmt: skip
        length = (
            struct.pack("<HH2sHI", 0x0008, 0x0000, b"UL", 4, 100)[:8] + struct.pack("<I", 100)
            if syntax == ExplicitVRLittleEndian
            else struct.pack("<HHII", 0x0008, 0x0000, 4, 100)
        )
        with_lengths[at:at] = length
        assert_same(bytes(with_lengths))


SEEDS = [
    to_bytes(mr_dataset()),
    to_bytes(mr_dataset(), ImplicitVRLittleEndian),
    to_bytes(mr_dataset(), DeflatedExplicitVRLittleEndian),
    to_bytes(enhanced_mr_dataset(frames=2, rows=8, columns=8)),
    to_bytes(_undefined_lengths(with_more_phi(mr_dataset(rows=8, columns=8)))),
    to_bytes(with_more_phi(mr_dataset(rows=8, columns=8)), ImplicitVRLittleEndian),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(SEEDS))),
    MUTATIONS,
)
def test_mutated_files_get_the_oracles_outcome(seed, mutations):
    data = mutate(SEEDS[seed], mutations)
    assert_same(data)


def test_the_door_holds_the_pixels_once_and_reads_them_back_on_use():
    # The clean file is the one copy of the pixels; the data set reads them from it when asked
    # (the dataset path held three: the original's, the data set's and the file's).
    original = enhanced_mr_dataset(frames=8, rows=256, columns=256)
    data = to_bytes(original)
    tracemalloc.start()
    try:
        result = deidentify_file(data, key=KEY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.3 * len(data)
    assert result.ds.PixelData == original.PixelData
    assert result.ds.pixel_array.shape == (8, 256, 256)


def test_each_site_has_its_own_key_and_both_paths_agree_under_it():
    """The door de-identifies a site's files with ``site_key``: deterministic, unlike the
    installation's key and every other site's; under it the fast path gives the oracle's very
    bytes, and two sites' copies of one file share no UID, pseudonym or shifted date."""
    data = to_bytes(_phi_mr())
    keys = {site: site_key(KEY, site) for site in ("7", "8")}
    assert keys["7"] == site_key(KEY, "7") and len({KEY, *keys.values()}) == 3
    assert site_key(b"x" * 32, "7") != keys["7"]
    copies = {}
    for site, key in keys.items():
        result = fast.deidentify_fast(data, key=key, max_bytes=DEFAULT_MAX_BYTES)
        assert result.data == deidentify_reference(data, key=key)[0]
        copies[site] = result.ds
    seven, eight = copies["7"], copies["8"]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID"):
        assert seven.get(keyword) != eight.get(keyword), keyword
    assert seven.StudyDate != eight.StudyDate  # two shifts (fixed keys: no chance involved)
