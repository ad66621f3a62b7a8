"""Synthetic MR files for the de-identification tests, full of canary PHI."""

from __future__ import annotations

import io

import numpy as np
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
