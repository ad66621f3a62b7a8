"""Canary sweep (security checklist D-01): PHI planted everywhere a file can carry it occurs
zero times in the whole de-identified byte stream, in any case or encoding we can think of."""

from __future__ import annotations

import io
import logging
import warnings

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from backend.deid.fast import deidentify_fast
from backend.deid.profile import (
    DEFAULT_MAX_BYTES,
    Rejected,
    deidentify_bytes,
    deidentify_reference,
    read_dicom,
)
from tests.deid.builders import (
    CANARIES,
    MORE_CANARIES,
    enhanced_mr_dataset,
    mr_dataset,
    to_bytes,
    with_more_phi,
)

KEY = b"k" * 32
ALL_CANARIES = CANARIES + MORE_CANARIES


def _variants(text: str) -> list[bytes]:
    forms = {text, text.lower(), text.upper(), text.title()}
    return [f.encode(codec) for f in forms for codec in ("ascii", "utf-16-le", "utf-16-be")]


def _leaks(data: bytes) -> list[str]:
    return sorted({c for c in ALL_CANARIES for v in _variants(c) if v in data})


def _file_full_of_phi(syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds = with_more_phi(mr_dataset())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.SourceApplicationEntityTitle = "META-CANARY"
    ds.file_meta = meta
    ds.preamble = b"PREAMBLE-CANARY".ljust(128, b"\x00")
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=syntax == ImplicitVRLittleEndian, enforce_file_format=True)
    return out.getvalue()


def test_the_planted_file_really_carries_every_canary():
    # Guards the sweep below against canaries that never made it into the input.
    assert _leaks(_file_full_of_phi()) == sorted(set(ALL_CANARIES))


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
)
def test_no_canary_occurs_anywhere_in_the_de_identified_bytes(syntax):
    out, _ = deidentify_bytes(_file_full_of_phi(syntax), key=KEY)
    assert _leaks(out) == []


def test_no_canary_survives_in_an_enhanced_mr_file():
    out, _ = deidentify_bytes(to_bytes(with_more_phi(enhanced_mr_dataset())), key=KEY)
    assert _leaks(out) == []


def test_no_canary_is_left_in_the_returned_data_set_either():
    _, ds = deidentify_bytes(_file_full_of_phi(), key=KEY)
    text = repr(ds) + "".join(repr(e.value) for e in ds.iterall())
    assert [c for c in ALL_CANARIES if c.lower() in text.lower()] == []


def test_every_private_attribute_curve_and_overlay_is_gone_at_every_depth():
    _, ds = deidentify_bytes(_file_full_of_phi(), key=KEY)
    for element in ds.iterall():
        assert not element.tag.is_private
        assert not 0x5000 <= element.tag.group <= 0x50FF
        assert not 0x6000 <= element.tag.group <= 0x60FF
        assert element.keyword or element.tag.group == 0x7FE0


def test_a_refused_file_leaves_no_header_value_in_warnings_or_logs(caplog):
    ds = mr_dataset()
    ds.SOPInstanceUID = "1.2.3.ZQXCANARYFAMILY"  # invalid UID: pydicom would quote it
    data = to_bytes(ds)
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Rejected) as refused:
            read_dicom(data)
    assert "ZQXCANARYFAMILY" not in refused.value.reason
    assert not [w for w in caught if "CANARY" in str(w.message)]
    assert "CANARY" not in caplog.text


def test_the_output_reads_back_as_a_standard_file():
    out, ds = deidentify_bytes(_file_full_of_phi(), key=KEY)
    reread = pydicom.dcmread(io.BytesIO(out))
    assert reread.SOPInstanceUID == ds.SOPInstanceUID
    assert reread.PatientIdentityRemoved == "YES"
    assert "SourceApplicationEntityTitle" not in reread.file_meta


@pytest.mark.parametrize("vr", ["LO", "SH", "UN"])
@pytest.mark.parametrize("keyword", ["PatientName", "OtherPatientNames", "PerformingPhysicianName"])
def test_a_name_written_with_another_vr_is_still_cut_out_of_descriptions(keyword, vr):
    # A sender that writes a person's name with a VR other than PN: it is still a name, and
    # Clean Descriptors must find it in free text, on the fast path and on the dataset path.
    ds = mr_dataset()
    name = "ZQXCANARYFAMILY^QZGIVENCANARY"
    if keyword != "PatientName":
        ds.PatientName = "Other^Person"
    ds.add_new(pydicom.datadict.tag_for_keyword(keyword), vr, name.encode() if vr == "UN" else name)
    ds.StudyDescription = "MR BRAIN ZQXCANARYFAMILY"
    ds.ImageComments = "seen with qzgivencanary awake"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom: 29 characters are too long for SH
        data = to_bytes(ds)
    assert b"ZQXCANARYFAMILY" in data and b"QZGIVENCANARY" in data  # planted for real
    outputs = [deidentify_bytes(data, key=KEY)[0], deidentify_reference(data, key=KEY)[0]]
    if keyword == "OtherPatientNames" and vr != "UN":
        # Not one of the attributes the profile writes: the fast path answers it itself.
        outputs.append(deidentify_fast(data, key=KEY, max_bytes=DEFAULT_MAX_BYTES).data)
    for out in outputs:
        assert _leaks(out) == []
        clean = pydicom.dcmread(io.BytesIO(out))
        assert clean.StudyDescription.startswith("MR BRAIN")  # cleaned, not dropped


def test_a_name_that_does_not_decode_in_its_declared_character_set_empties_the_descriptions():
    # UTF-8 declared, Latin-1 written: pydicom reads the name with replacement characters, so its
    # words cannot be searched for in free text; every cleaned descriptor loses its text instead.
    ds = mr_dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.add_new(0x00100010, "PN", "Zoë^Müllerqx".encode("latin-1"))
    ds.StudyDescription = "IRM crâne Müllerqx".encode("latin-1")
    ds.ImageComments = "Zoë calme".encode("latin-1")
    data = to_bytes(ds)
    assert "Müllerqx".encode("latin-1") in data  # planted for real
    outputs = [deidentify_bytes(data, key=KEY)[0], deidentify_reference(data, key=KEY)[0]]
    assert outputs[0] == outputs[1]
    for out in outputs:
        assert b"Zo\xeb" not in out and b"M\xfcllerqx" not in out and b"llerqx" not in out
        clean = pydicom.dcmread(io.BytesIO(out))
        assert clean.get("StudyDescription", "") == ""
        assert clean.get("ImageComments", "") == ""


def test_a_readable_name_keeps_the_rest_of_the_description():
    ds = mr_dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Zoë^Müllerqx"
    ds.StudyDescription = "IRM crâne Müllerqx"
    out = deidentify_bytes(to_bytes(ds), key=KEY)[0]
    assert pydicom.dcmread(io.BytesIO(out)).StudyDescription == "IRM crâne"
