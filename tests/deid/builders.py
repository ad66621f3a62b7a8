"""Synthetic MR files for the de-identification tests, full of canary PHI."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

CANARIES = [
    "ZQXCANARYFAMILY",
    "QZGIVENCANARY",
    "PID-CANARY-77",
    "ACC-CANARY-99",
    "CANARY GENERAL HOSPITAL",
    "DR CANARYREFERRER",
    "TECH CANARYOPERATOR",
    "PRIVATE-CANARY",
    "NESTED-CANARY",
    "OVERLAY-CANARY",
    "CANARY-STATION",
    "SN-CANARY-1234",
    "19610423",
]
STUDY_UID = "1.2.826.0.1.3680043.8.498.1000"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1001"


def mr_dataset(sop_suffix: int = 1, rows: int = 32, columns: int = 32) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.2{sop_suffix:04d}"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.3000"
    ds.Modality = "MR"
    ds.PatientName = "ZQXCANARYFAMILY^QZGIVENCANARY"
    ds.PatientID = "PID-CANARY-77"
    ds.PatientBirthDate = "19610423"
    ds.PatientSex = "F"
    ds.AccessionNumber = "ACC-CANARY-99"
    ds.InstitutionName = "CANARY GENERAL HOSPITAL"
    ds.ReferringPhysicianName = "DR CANARYREFERRER"
    ds.OperatorsName = "TECH CANARYOPERATOR"
    ds.StationName = "CANARY-STATION"
    ds.DeviceSerialNumber = "SN-CANARY-1234"
    ds.StudyDate = "20240315"
    ds.SeriesDate = "20240315"
    ds.AcquisitionDate = "20240316"
    ds.StudyTime = "101500"
    ds.StudyDescription = "MR BRAIN ZQXCANARYFAMILY 2024-03-15"
    ds.SeriesDescription = "T2 TSE AX"
    ds.ProtocolName = "t2_tse_ax PID-CANARY-77"
    ds.ImageComments = "patient ZQXCANARYFAMILY moved"
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "Prisma"
    ds.MagneticFieldStrength = 3.0
    ds.PixelBandwidth = 130.0
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.RepetitionTime = 4000.0
    ds.EchoTime = 90.0
    ds.FlipAngle = 150.0
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "SK"
    ds.MRAcquisitionType = "2D"
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 5.0
    ds.SeriesNumber = 3
    ds.InstanceNumber = sop_suffix
    ds.ImagePositionPatient = [0, 0, float(sop_suffix)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.20001"
    nested = Dataset()
    nested.PatientName = "NESTED-CANARY"
    deeper = Dataset()
    deeper.add_new(0x00291010, "LO", "PRIVATE-CANARY")  # private, depth 2
    deeper.PersonName = "NESTED-CANARY"
    nested.ContentSequence = Sequence([deeper])
    ref.add_new(0x00091001, "LO", "PRIVATE-CANARY")  # private, depth 1
    ref.RequestAttributesSequence = Sequence([nested])
    ds.ReferencedImageSequence = Sequence([ref])
    ds.add_new(0x00291010, "LO", "PRIVATE-CANARY")  # private, top level
    ds.add_new(0x60003000, "OW", b"OVERLAY-CANARY\x00\x00")  # overlay data
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = (np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns) * 3) % 4096
    ds.PixelData = pixels.tobytes()
    return ds


def to_bytes(
    ds: Dataset, syntax: str = ExplicitVRLittleEndian, preamble: bytes | None = None
) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    ds.preamble = preamble if preamble is not None else b"\x00" * 128
    out = io.BytesIO()
    ds.save_as(
        out,
        implicit_vr=syntax == ImplicitVRLittleEndian,
        little_endian=True,
        enforce_file_format=True,
    )
    return out.getvalue()


# More canaries, for the de-identification tests only: every place Table E.1-1 or our VR rules
# must reach, at every depth (security checklist D-01).
MORE_CANARIES = [
    "OTHERPID-CANARY",
    "ALIASNAME-CANARY",
    "HISTORY-CANARY",
    "CURVE-CANARY",
    "DEEP-PRIVATE-CANARY",
    "UNKNOWN-TAG-CANARY",
    "PREAMBLE-CANARY",
    "META-CANARY",
    "PHYSICIAN-CANARY",
    "ADDRESS-CANARY",
    "REQUEST-CANARY",
    "23.04.1961",
    "CANARYDEPT",
    "DEVICEDESC-CANARY",
]


def with_more_phi(ds: Dataset) -> Dataset:
    """Add the ``MORE_CANARIES`` to an ``mr_dataset``."""
    other = Dataset()
    other.PatientID = "OTHERPID-CANARY"
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.OtherPatientNames = "ALIASNAME-CANARY"
    ds.AdditionalPatientHistory = "HISTORY-CANARY since 23.04.1961"
    ds.add_new(0x50003000, "OW", b"CURVE-CANARY")  # curve data
    ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")  # private creator
    ds.add_new(0x00191008, "LO", "PRIVATE-CANARY")  # private element of that creator
    ds.add_new(0x00231001, "UN", b"DEEP-PRIVATE-CANARY\x00")  # private, no creator
    ds.add_new(0x00080099, "LO", "UNKNOWN-TAG-CANARY")  # a public tag no dictionary knows
    ds.PerformingPhysicianName = "PHYSICIAN-CANARY^ALBERT"
    ds.InstitutionAddress = "1 ADDRESS-CANARY STREET"
    ds.InstitutionalDepartmentName = "CANARYDEPT"
    ds.SeriesDescription = "T2 for qzgivencanary Zqxcanaryfamily"  # names, other case
    request = Dataset()
    request.RequestedProcedureDescription = "REQUEST-CANARY"
    request.RequestedProcedureID = "REQUEST-CANARY"
    request.ScheduledProcedureStepID = "REQUEST-CANARY"
    ds.RequestAttributesSequence = Sequence([request])
    equipment = Dataset()
    equipment.Manufacturer = "SIEMENS"
    equipment.InstitutionName = "CANARY GENERAL HOSPITAL"
    equipment.DeviceDescription = "DEVICEDESC-CANARY"
    level3 = Dataset()
    level3.add_new(0x00331010, "LO", "DEEP-PRIVATE-CANARY")  # private at depth 3
    level3.PersonName = "PHYSICIAN-CANARY"
    code = Dataset()
    code.CodeValue = "1"
    code.CodingSchemeDesignator = "99LOCAL"
    code.CodeMeaning = "meaning"
    code.ContentSequence = Sequence([level3])
    equipment.PurposeOfReferenceCodeSequence = Sequence([code])
    ds.ContributingEquipmentSequence = Sequence([equipment])
    return ds


def enhanced_mr_dataset(frames: int = 3, rows: int = 16, columns: int = 16) -> Dataset:
    """A small Enhanced MR Image (multi-frame) with its acquisition values in functional groups."""
    ds = mr_dataset(1, rows=rows, columns=columns)
    for keyword in ("RepetitionTime", "EchoTime", "FlipAngle", "PixelSpacing", "SliceThickness",
                    "InPlanePhaseEncodingDirection", "ImagePositionPatient",
                    "ImageOrientationPatient"):  # fmt: skip
        delattr(ds, keyword)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.NumberOfFrames = frames
    ds.DeviceSerialNumber = "SN-CANARY-1234"
    ds.SoftwareVersions = "syngo MR XA30"
    shared = Dataset()
    timing = Dataset()
    timing.RepetitionTime = 4000.0
    timing.FlipAngle = 150.0
    timing.EchoTrainLength = 16
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    measures = Dataset()
    measures.PixelSpacing = [0.5, 0.5]
    measures.SliceThickness = 5.0
    shared.PixelMeasuresSequence = Sequence([measures])
    fov = Dataset()
    fov.InPlanePhaseEncodingDirection = "COL"
    fov.PercentPhaseFieldOfView = 80.0
    fov.MRAcquisitionPhaseEncodingStepsInPlane = 256
    shared.MRFOVGeometrySequence = Sequence([fov])
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for index in range(frames):
        frame = Dataset()
        content = Dataset()
        content.FrameAcquisitionDateTime = f"2024031610{index:02d}00.000000"
        content.FrameAcquisitionNumber = index + 1
        frame.FrameContentSequence = Sequence([content])
        position = Dataset()
        position.ImagePositionPatient = [0.0, 0.0, 5.0 * index]
        frame.PlanePositionSequence = Sequence([position])
        echo = Dataset()
        echo.EffectiveEchoTime = 90.0
        frame.MREchoSequence = Sequence([echo])
        per_frame.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    pixels = np.arange(frames * rows * columns, dtype=np.uint16).reshape(frames, rows, columns)
    ds.PixelData = pixels.tobytes()
    return ds


# Byte-level mutations for the fuzz tests: (kind, where as a fraction of the length, payload).
MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]),
        st.floats(min_value=0, max_value=1, exclude_max=True),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)


def mutate(original: bytes, mutations: list[tuple[str, float, bytes]]) -> bytes:
    """Apply :data:`MUTATIONS`' draws to a copy of ``original``."""
    data = bytearray(original)
    for kind, where, payload in mutations:
        at = int(where * len(data)) if data else 0
        if kind == "flip" and data:
            data[at] ^= payload[0] or 1
        elif kind == "truncate":
            data = data[:at]
        elif kind == "insert":
            data[at:at] = payload
        elif kind == "delete":
            del data[at : at + len(payload)]
        elif kind == "overwrite":
            data[at : at + len(payload)] = payload
    return bytes(data)


_DERIVED_SECONDARY = b"DERIVED\\SECONDARY\\OTHER "
_ORIGINAL_PRIMARY = b"ORIGINAL\\PRIMARY\\M\\OTHER"


def as_acquired(data: bytes) -> bytes:
    """pydicom's sample MR files (``MR_small*.dcm``) say ImageType DERIVED\\SECONDARY\\OTHER,
    which the door refuses (security checklist D-09); the same file as an acquired image
    (ORIGINAL\\PRIMARY\\M\\OTHER: the same length, so every transfer syntax stays valid)."""
    assert data.count(_DERIVED_SECONDARY) == 1, "not the sample's ImageType"
    return data.replace(_DERIVED_SECONDARY, _ORIGINAL_PRIMARY)
