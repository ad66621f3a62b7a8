"""Demo image series: real brain anatomy (nilearn's ICBM152 T1 template, installed with the ML
data) written as an MR series, clean and with simulated artifacts, ingested through the same
de-identifying door as every other image. The demo then has series a radiologist can open, score
live and annotate (the dashboards' weeks of synthetic history have no images)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from backend.accounts.models import Site


@dataclass(frozen=True)
class DemoSeries:
    number: int
    description: str
    artifact: str | None
    severity: float


DEMO_SERIES = (
    DemoSeries(1, "T1 AX demo (clean)", None, 0.0),
    DemoSeries(2, "T1 AX demo (motion)", "motion", 0.7),
    DemoSeries(3, "T1 AX demo (ghosting)", "ghosting", 0.8),
)
SLICES = 16


def _uid(*parts: object) -> str:
    """Deterministic UIDs, so running demo_data again ingests duplicates (stored once)."""
    return generate_uid(entropy_srcs=["artiscan-demo", *map(str, parts)])


def _slices() -> list[np.ndarray]:
    from ml.data.sources import load_icbm152_2009a

    t1 = load_icbm152_2009a().maps["T1"]  # (X, Y, Z) RAS+, 1 mm, values 0..1
    z = np.linspace(0.30, 0.72, SLICES) * t1.shape[2]
    # Axial slices, anterior up, patient's right on the image's left (radiological view).
    return [np.rot90(t1[:, :, round(float(k))]).astype(np.float32) for k in z]


def _dataset(image: np.ndarray, spec: DemoSeries, index: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = _uid("instance", spec.number, index)
    ds.StudyInstanceUID = _uid("study")
    ds.SeriesInstanceUID = _uid("series", spec.number)
    ds.FrameOfReferenceUID = _uid("frame")
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "DEMO^VOLUNTEER", "DEMO-0001", "19800101"
    ds.StudyDate = ds.SeriesDate = "20261127"
    ds.StudyDescription = "Brain demo (ICBM152 template anatomy)"
    ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "MR", "ArtiScan", "Demo scanner"
    ds.SeriesNumber, ds.InstanceNumber = spec.number, index + 1
    ds.SeriesDescription = ds.ProtocolName = spec.description
    ds.MagneticFieldStrength, ds.PixelBandwidth = 3.0, 130.0
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.EchoTime, ds.RepetitionTime, ds.FlipAngle = 2.5, 2000.0, 9.0
    ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "GR", "SP", "2D"
    ds.SliceThickness, ds.PixelSpacing = 4.0, [1.0, 1.0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-98.0, -116.0, float(index * 4)]
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.clip(image * 3000.0, 0, 4095).astype(np.uint16).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = (
        MRImageStorage,
        ds.SOPInstanceUID,
    )
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def demo_series_files(spec: DemoSeries) -> list[bytes]:
    """One demo series as Part 10 files (with identifiers, as a scanner would send them)."""
    from ml.simulate import AcquisitionHeader, simulate

    files = []
    for index, clean in enumerate(_slices()):
        ds = _dataset(clean, spec, index)
        if spec.artifact is not None:
            header = AcquisitionHeader.from_dataset(ds)
            image = simulate(
                clean, spec.artifact, spec.severity, header, 1000 * spec.number + index
            )
            ds = _dataset(np.asarray(image, dtype=np.float32), spec, index)
        out = io.BytesIO()
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
        files.append(out.getvalue())
    return files


def demo_series_ingest(*, site: Site) -> int:
    """Ingest the demo series into ``site`` (scoring is queued as for any arrival); returns how
    many instances were newly accepted."""
    from backend.ingest.services import series_ingest

    accepted = 0
    for spec in DEMO_SERIES:
        result = series_ingest(site=site, files=demo_series_files(spec), source="upload")
        accepted += sum(1 for outcome in result if outcome.status == "accepted")
    return accepted
