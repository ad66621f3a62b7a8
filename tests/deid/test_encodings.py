"""Every transfer syntax the door accepts comes out readable, with the pixels and the model's
header values exactly as they went in; Enhanced MR stays multi-frame."""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from backend.deid.profile import deidentify_bytes, read_dicom
from tests.deid.builders import enhanced_mr_dataset, mr_dataset, to_bytes

KEY = b"k" * 32


def _big_endian_file() -> tuple[bytes, np.ndarray]:
    ds = mr_dataset()
    pixels = np.frombuffer(ds.PixelData, "<u2").reshape(ds.Rows, ds.Columns).copy()
    ds.PixelData = pixels.astype(">u2").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=False, enforce_file_format=True)
    return out.getvalue(), pixels


def test_a_big_endian_file_comes_out_little_endian_with_the_same_pixel_values():
    data, pixels = _big_endian_file()
    out, ds = deidentify_bytes(data, key=KEY)
    reread = pydicom.dcmread(io.BytesIO(out))
    assert reread.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(reread.pixel_array, pixels)
    assert reread.RepetitionTime == 4000.0 and reread.Rows == 32
    assert ds.PatientID.startswith("ANON-")


def test_an_rle_compressed_file_keeps_its_syntax_and_its_exact_pixel_bytes():
    original = mr_dataset()
    original.file_meta = FileMetaDataset()
    original.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    original.compress(RLELossless, generate_instance_uid=False)
    data = to_bytes(original, RLELossless)
    out, _ = deidentify_bytes(data, key=KEY)
    reread = pydicom.dcmread(io.BytesIO(out))
    assert reread.file_meta.TransferSyntaxUID == RLELossless
    assert reread.PixelData == original.PixelData
    expected = np.frombuffer(mr_dataset().PixelData, "<u2").reshape(32, 32)
    assert np.array_equal(reread.pixel_array, expected)


def test_an_enhanced_mr_file_stays_multi_frame_with_its_functional_groups_unchanged():
    original = enhanced_mr_dataset(frames=3)
    out, ds = deidentify_bytes(to_bytes(original), key=KEY)
    reread = pydicom.dcmread(io.BytesIO(out))
    assert reread.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1"
    assert reread.NumberOfFrames == 3 and reread.PixelData == original.PixelData
    shared = reread.SharedFunctionalGroupsSequence[0]
    was = original.SharedFunctionalGroupsSequence[0]
    for sequence, keyword in (
        ("MRTimingAndRelatedParametersSequence", "RepetitionTime"),
        ("MRTimingAndRelatedParametersSequence", "FlipAngle"),
        ("PixelMeasuresSequence", "PixelSpacing"),
        ("PixelMeasuresSequence", "SliceThickness"),
        ("MRFOVGeometrySequence", "InPlanePhaseEncodingDirection"),
        ("MRFOVGeometrySequence", "PercentPhaseFieldOfView"),
        ("PlaneOrientationSequence", "ImageOrientationPatient"),
    ):
        assert shared[sequence][0][keyword].value == was[sequence][0][keyword].value, keyword
    for new, old in zip(
        reread.PerFrameFunctionalGroupsSequence,
        original.PerFrameFunctionalGroupsSequence,
        strict=True,
    ):
        assert new.MREchoSequence[0].EffectiveEchoTime == 90.0
        assert new.PlanePositionSequence[0].ImagePositionPatient == (
            old.PlanePositionSequence[0].ImagePositionPatient
        )
        moved = new.FrameContentSequence[0].FrameAcquisitionDateTime
        before = old.FrameContentSequence[0].FrameAcquisitionDateTime
        assert moved != before and moved[8:] == before[8:]  # the date moved, the time did not
    # Type 1 in the Enhanced General Equipment module: a dummy, not the serial number.
    assert reread.DeviceSerialNumber == "ANONYMIZED"
    assert ds.Manufacturer == "SIEMENS" and ds.ManufacturerModelName == "Prisma"


def test_an_implicit_vr_file_comes_out_explicit_with_the_same_values():
    original = mr_dataset()
    out, _ = deidentify_bytes(to_bytes(original, ImplicitVRLittleEndian), key=KEY)
    reread = read_dicom(out)
    assert reread.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert reread.PixelData == original.PixelData
    assert reread.PixelSpacing == original.PixelSpacing
