"""The de-identification profile: no canary survives, links still resolve, the model's header
values and the pixels stay exactly as they were."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from backend.deid.profile import (
    deidentify,
    deidentify_bytes,
    pseudonymous_uid,
    read_dicom,
    write_dicom,
)
from tests.deid.builders import CANARIES, STUDY_UID, mr_dataset, to_bytes

KEY = b"k" * 32
ROOT = Path(__file__).resolve().parents[2]


def _variants(text: str) -> list[bytes]:
    return [text.encode(), text.lower().encode(), text.upper().encode(), text.encode("utf-16-le")]


@pytest.mark.parametrize(
    "syntax",
    [pydicom.uid.ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian],
)
def test_no_canary_survives_anywhere_in_the_output_bytes(syntax):
    out, _ = deidentify_bytes(to_bytes(mr_dataset(), syntax), key=KEY)
    leaks = [c for c in CANARIES for v in _variants(c) if v in out]
    assert leaks == []


def test_private_tags_overlays_and_names_are_gone_at_every_depth():
    _, ds = deidentify_bytes(to_bytes(mr_dataset()), key=KEY)
    for element in ds.iterall():
        assert not element.tag.is_private
        assert not 0x6000 <= element.tag.group <= 0x60FF
        if element.VR == "PN" and element.value:
            assert str(element.value).startswith("ANON-") or element.value == "ANONYMOUS"


def test_the_patient_gets_a_keyed_pseudonym_that_groups_their_series():
    _, first = deidentify_bytes(to_bytes(mr_dataset(1)), key=KEY)
    _, second = deidentify_bytes(to_bytes(mr_dataset(2)), key=KEY)
    assert first.PatientID == second.PatientID == str(first.PatientName)
    assert first.PatientID.startswith("ANON-")
    assert first.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in first.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105", "113107"]


def test_uids_are_replaced_and_references_between_instances_still_resolve():
    _, first = deidentify_bytes(to_bytes(mr_dataset(1)), key=KEY)
    _, second = deidentify_bytes(to_bytes(mr_dataset(2)), key=KEY)
    assert first.StudyInstanceUID == second.StudyInstanceUID != STUDY_UID
    assert first.SeriesInstanceUID == second.SeriesInstanceUID
    assert first.FrameOfReferenceUID == second.FrameOfReferenceUID
    # Instance 2 references instance 1 (mr_dataset's ReferencedImageSequence points at 2_0001).
    assert second.ReferencedImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"  # standard UIDs are kept
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    for uid in (first.StudyInstanceUID, first.SOPInstanceUID):
        assert len(uid) <= 64 and uid.startswith("2.25.") and pydicom.uid.UID(uid).is_valid


def test_uids_are_the_same_in_another_process_and_differ_with_another_key():
    code = (
        "from backend.deid.profile import pseudonymous_uid; "
        f"print(pseudonymous_uid('{STUDY_UID}', key=b'k' * 32))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other == pseudonymous_uid(STUDY_UID, key=KEY)
    assert pseudonymous_uid(STUDY_UID, key=b"x" * 32) != other


def test_dates_move_by_one_offset_per_patient_keeping_intervals():
    _, ds = deidentify_bytes(to_bytes(mr_dataset()), key=KEY)
    study = date.fromisoformat(f"{ds.StudyDate[:4]}-{ds.StudyDate[4:6]}-{ds.StudyDate[6:]}")
    acquired = date.fromisoformat(
        f"{ds.AcquisitionDate[:4]}-{ds.AcquisitionDate[4:6]}-{ds.AcquisitionDate[6:]}"
    )
    assert ds.StudyDate != "20240315"
    assert (acquired - study).days == 1
    assert ds.PatientBirthDate in (None, "")
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_descriptions_are_cleaned_not_dropped():
    _, ds = deidentify_bytes(to_bytes(mr_dataset()), key=KEY)
    assert ds.StudyDescription == "MR BRAIN"
    assert ds.ProtocolName == "t2_tse_ax"
    assert ds.SeriesDescription == "T2 TSE AX"
    assert ds.ImageComments == "patient moved"


def test_what_the_model_and_advice_need_is_kept_unchanged_with_the_pixels():
    original = mr_dataset()
    _, ds = deidentify_bytes(to_bytes(original), key=KEY)
    for keyword in (
        "MagneticFieldStrength", "PixelBandwidth", "InPlanePhaseEncodingDirection",
        "RepetitionTime", "EchoTime", "FlipAngle", "ScanningSequence", "SequenceVariant",
        "MRAcquisitionType", "PixelSpacing", "SliceThickness", "Rows", "Columns",
        "Manufacturer", "ManufacturerModelName", "ImagePositionPatient", "ImageOrientationPatient",
        "BitsStored", "PhotometricInterpretation",
    ):  # fmt: skip
        assert ds[keyword].value == original[keyword].value, keyword
    assert ds.PixelData == original.PixelData


def test_the_preamble_is_zeroed_and_the_file_meta_is_ours():
    out, _ = deidentify_bytes(to_bytes(mr_dataset()), key=KEY)
    assert out[:128] == b"\x00" * 128 and out[128:132] == b"DICM"
    reread = pydicom.dcmread(pydicom.filebase.DicomBytesIO(out))
    assert reread.file_meta.ImplementationVersionName == "ARTISCAN_0_1"
    assert reread.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_de_identifying_twice_gives_the_same_bytes():
    data = to_bytes(mr_dataset())
    assert deidentify_bytes(data, key=KEY)[0] == deidentify_bytes(data, key=KEY)[0]


def test_read_dicom_accepts_the_pydicom_sample_mr():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("MR_small.dcm")
    ds = read_dicom(Path(path).read_bytes())
    assert ds.Modality == "MR"


def test_de_identifying_in_place_gives_the_same_result_as_on_a_copy():
    data = to_bytes(mr_dataset())
    copied = deidentify(read_dicom(data), key=KEY)
    original = read_dicom(data)
    in_place = deidentify(original, key=KEY, in_place=True)
    assert in_place is original
    assert write_dicom(in_place) == write_dicom(copied)
