"""The metadata text made at ingest is, byte for byte, what pydicom's ``to_json_dict`` +
``json.dumps`` make (``metadata_json_reference``), however many elements it takes from the
per-process memo of element texts, and the memo stays bounded."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from backend.deid.profile import deidentify_file
from backend.dicomweb import metadata
from backend.dicomweb.metadata import metadata_json_of, metadata_json_reference
from tests.deid.builders import mr_dataset, to_bytes

DEID_KEY = b"metadata-json-test-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def _empty_memo():
    metadata._memo.clear()
    yield
    metadata._memo.clear()


def _outcome(fn, data) -> str | type[BaseException]:
    """The text, or the type of what was raised (an unreadable file fails the same way)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(data)
        except Exception as exc:
            return type(exc)


def _dict_of(ds: Dataset) -> str:
    return json.dumps(ds.to_json_dict(bulk_data_threshold=2**20))


def _corpus() -> list[tuple[str, bytes]]:
    paths = sorted(set(pydicom.data.get_testdata_files()) | set(pydicom.data.get_charset_files()))
    files = []
    for path in map(Path, paths):
        if path.is_file():
            files.append((str(path.relative_to(path.parents[1])), path.read_bytes()))
    return files


def _file(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds.SOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.4")
    ds.SOPInstanceUID = ds.get("SOPInstanceUID", "1.2.826.0.1.3680043.8.498.9")
    if syntax != ExplicitVRBigEndian:
        return to_bytes(ds, syntax)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    ds.preamble = b"\x00" * 128
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=False, enforce_file_format=True)
    return out.getvalue()


def test_every_pydicom_test_file_gives_the_reference_text_cold_warm_and_after_the_others():
    corpus = _corpus()
    readable = 0
    expected = {}
    for name, data in corpus:
        metadata._memo.clear()
        expected[name] = _outcome(metadata_json_reference, data)
        readable += isinstance(expected[name], str)
        assert _outcome(metadata_json_of, data) == expected[name], f"{name}: cold"
        assert _outcome(metadata_json_of, data) == expected[name], f"{name}: from the memo"
    assert readable > 150  # sequences, multi-valued, charsets, OB/OW/UN, both byte orders
    # One memo across every file (other charsets, byte orders, VRs for the same tags), both ways.
    metadata._memo.clear()
    for order in (corpus, corpus[::-1]):
        for name, data in order:
            assert _outcome(metadata_json_of, data) == expected[name], name
    assert metadata._memo


def test_a_de_identified_series_is_the_reference_text_and_shares_its_element_texts():
    files = [
        deidentify_file(to_bytes(mr_dataset(i, rows=64, columns=64)), key=DEID_KEY).data
        for i in range(1, 41)
    ]
    expected = [metadata_json_reference(f) for f in files]
    assert metadata_json_of(files[0]) == expected[0]
    first = len(metadata._memo)
    assert first > 20
    for data, text in zip(files[1:], expected[1:], strict=True):
        assert metadata_json_of(data) == text
    # Only what differs between instances (UIDs, number, position) was converted again.
    per_instance = (len(metadata._memo) - first) / (len(files) - 1)
    assert per_instance < first / 4
    assert [metadata_json_of(f) for f in files] == expected


def test_plain_explicit_little_endian_files_skip_dcmread_and_read_the_same_data_set():
    fast = 0
    for name, data in _corpus():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                expected = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            except Exception:
                continue
            ds = metadata._read(data)
            fast += not isinstance(ds, FileDataset)
            assert ds.original_encoding == expected.original_encoding, name
            assert ds.original_character_set == expected.original_character_set, name
            assert _outcome(_dict_of, ds) == _outcome(_dict_of, expected), name
    assert fast > 50
    data = deidentify_file(to_bytes(mr_dataset(1)), key=DEID_KEY).data
    assert not isinstance(metadata._read(data), FileDataset)


def test_a_truncated_or_altered_file_fails_or_reads_as_pydicom_reads_it():
    data = deidentify_file(to_bytes(mr_dataset(1)), key=DEID_KEY).data
    variants = [data[:n] for n in range(0, 700, 7)]
    variants.append(data[:128] + b"DICN" + data[132:])
    variants.append(data[:132] + data[132:144].replace(b"UL", b"XX"))
    implicit = b"1.2.840.10008.1.2\x00\x00\x00"  # as long: the data set read as implicit
    variants.append(data.replace(b"1.2.840.10008.1.2.1\x00", implicit, 1))
    assert variants[-1] != data and len(variants[-1]) == len(data)
    for variant in variants:
        expected = _outcome(metadata_json_reference, variant)
        metadata._memo.clear()
        assert _outcome(metadata_json_of, variant) == expected
        metadata.metadata_json_of(data)
        assert _outcome(metadata_json_of, variant) == expected


def test_the_same_bytes_under_another_character_set_are_converted_again():
    files = []
    for charset in ("ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 87", None):
        ds = Dataset()
        if charset:
            ds.SpecificCharacterSet = charset
        ds.add_new(0x00100010, "PN", "Buc^J\xe9r\xf4me".encode("latin-1"))  # raw bytes
        ds.add_new(0x00081030, "LO", b"\xc3\xa9t\xc3\xa9")
        files.append(_file(ds))
    expected = [_outcome(metadata_json_reference, f) for f in files]
    assert len(set(expected)) == len(files)
    assert [_outcome(metadata_json_of, f) for f in files] == expected
    assert [_outcome(metadata_json_of, f) for f in files[::-1]] == expected[::-1]


def _ambiguous(pixel_representation: int, syntax: str) -> bytes:
    # Written as UN so that both syntaxes carry the same bytes and no VR: read back, each is
    # US or SS (US or OW) by the dictionary, resolved through the pixel representation.
    ds = Dataset()
    ds.PixelRepresentation = pixel_representation
    ds.BitsAllocated = 16
    ds.add_new(0x00280106, "UN", b"\xff\xff")  # Smallest Image Pixel Value: 65535 or -1
    item = Dataset()
    item.add_new(0x00283002, "UN", b"\x00\x10\x00\x80\x10\x00")  # LUT Descriptor
    item.add_new(0x00283006, "UN", b"\x00\x00\x01\x00\xff\xff\x03\x00")  # LUT Data
    ds.VOILUTSequence = Sequence([item])
    data = _file(ds, syntax)
    if syntax == ExplicitVRLittleEndian:  # pydicom writes the VR it resolved: make it UN again
        written = b"\x28\x00\x06\x01" + (b"US" if pixel_representation == 0 else b"SS")
        assert data.count(written + b"\x02\x00\xff\xff") == 1
        data = data.replace(written + b"\x02\x00", b"\x28\x00\x06\x01UN\x00\x00\x02\x00\x00\x00")
    return data


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_an_ambiguous_vr_is_resolved_in_each_file_not_taken_from_the_memo(syntax):
    files = [_ambiguous(0, syntax), _ambiguous(1, syntax), _ambiguous(0, syntax)]
    expected = [metadata_json_reference(f) for f in files]
    assert expected[0] != expected[1]
    assert [metadata_json_of(f) for f in files] == expected
    assert [metadata_json_of(f) for f in files[::-1]] == expected[::-1]


def _private(creator: str) -> bytes:
    ds = Dataset()
    ds.add_new(0x00090010, "LO", creator)
    ds.add_new(0x00091001, "UN", b"\x01\x00\x02\x00")  # its VR comes from the creator
    return _file(ds, ImplicitVRLittleEndian)


def test_private_tags_follow_their_creator():
    files = [_private("GEMS_IDEN_01"), _private("ACME 1.1"), _private("GEMS_IDEN_01")]
    expected = [metadata_json_reference(f) for f in files]
    assert [metadata_json_of(f) for f in files] == expected
    assert [metadata_json_of(f) for f in files[::-1]] == expected[::-1]


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_binary_multi_valued_and_nested_values_in_each_byte_order(syntax):
    def one(n: int) -> bytes:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.add_new(0x00091010, "OB", bytes(range(n, n + 9)))  # private
        ds.add_new(0x00090010, "LO", "PRIVATE CREATOR")
        ds.add_new(0x00185100, "CS", "HFS")
        ds.add_new(0x00280030, "DS", [0.5, 0.25 * n])
        ds.add_new(0x00189089, "FD", [0.0, 1.0, -1.0 / (n + 1)])
        ds.add_new(0x00283010, "SQ", Sequence())  # an empty sequence
        ds.add_new(0x00420011, "OB", b"\x00\xff" * 8)  # Encapsulated Document, inline
        ds.add_new(0x00660023, "OW", b"\x01\x02" * 4)  # Triangle Point Index List
        ds.add_new(0x00720062, "UN", b"AB")  # UN of a known tag: read as its CS
        ds.add_new(0x0022F000, "UN", bytes([n, 0xFF]))  # UN of a tag no dictionary knows
        ds.add_new(0x00081140, "SQ", Sequence([Dataset(), Dataset()]))
        ds[0x00081140].value[0].ReferencedSOPInstanceUID = f"1.2.3.{n}"
        ds[0x00081140].value[1].add_new(0x00080100, "SH", "113100")
        ds.add_new(0x00200013, "IS", n)
        ds.add_new(0x00100010, "PN", "Yamada^Tarou=\u5c71\u7530^\u592a\u90ce" if n else "")
        if n:
            ds.SpecificCharacterSet = ["ISO 2022 IR 6", "ISO 2022 IR 87"]
        return _file(ds, syntax)

    files = [one(n) for n in (0, 1, 2, 1, 0)]
    expected = [_outcome(metadata_json_reference, f) for f in files]
    assert all(isinstance(text, str) for text in expected)
    for part in ('"vr": "OB", "InlineBinary"', '"vr": "OW"', '"vr": "UN"', '"Ideographic"'):
        assert part in expected[1], part
    assert [_outcome(metadata_json_of, f) for f in files] == expected
    assert [_outcome(metadata_json_of, f) for f in files[::-1]] == expected[::-1]


def test_the_memo_is_bounded_and_keeps_no_long_value(monkeypatch):
    monkeypatch.setattr(metadata, "_MEMO_ENTRIES", 50)
    corpus = _corpus()
    for _, data in corpus:
        expected = _outcome(metadata_json_reference, data)
        assert _outcome(metadata_json_of, data) == expected
        assert len(metadata._memo) <= 50
    long_text = Dataset()
    long_text.add_new(0x00204000, "LT", "x" * (metadata._MEMO_MAX_VALUE + 2))
    data = _file(long_text)
    assert metadata_json_of(data) == metadata_json_reference(data)
    assert all(len(key[2]) <= metadata._MEMO_MAX_VALUE for key in metadata._memo)  # type: ignore[arg-type]
    assert not any(key[0] == 0x00204000 for key in metadata._memo)
