"""``python -m ml simulate`` on a tiny DICOM series written with pydicom."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from tests.gpu_ops.phantoms import head_phantom

ROOT = Path(__file__).resolve().parents[2]


def _write_series(
    folder: Path, slices: int = 4, n: int = 64, brightness: float = 1000
) -> list[Dataset]:
    folder.mkdir(parents=True, exist_ok=True)
    image, _ = head_phantom(n)
    study, series = generate_uid(), generate_uid()
    written = []
    # Written in reverse so the command must sort by InstanceNumber.
    for index in reversed(range(slices)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality = "MR"
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * index]
        ds.Rows = ds.Columns = n
        ds.PixelSpacing = [0.9, 0.9]
        ds.PixelBandwidth = 130.0
        ds.MagneticFieldStrength = 3.0
        ds.InPlanePhaseEncodingDirection = "COL"
        ds.EchoTime, ds.RepetitionTime = 15.0, 600.0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        pixels = np.rint(image * (brightness + 100 * index)).astype(np.uint16)
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"slice{index}.dcm", enforce_file_format=True)
        written.append(ds)
    (folder / "README.txt").write_text("not DICOM")
    return written


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ml", "simulate", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_it_writes_the_artifacted_series_and_its_masks(tmp_path):
    source = _write_series(tmp_path / "in")
    out = tmp_path / "out"
    result = _run(str(tmp_path / "in"), "--artifact", "ghosting", "--severity", "0.8",
                  "--seed", "3", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = sorted(out.glob("*.dcm"))
    assert len(files) == 4
    written = [pydicom.dcmread(f) for f in files]
    originals = sorted(source, key=lambda ds: ds.InstanceNumber)
    series_uids = {ds.SeriesInstanceUID for ds in written}
    assert len(series_uids) == 1 and originals[0].SeriesInstanceUID not in series_uids
    assert not {ds.SOPInstanceUID for ds in written} & {ds.SOPInstanceUID for ds in originals}
    for ds, orig in zip(written, originals, strict=True):
        assert ds.InstanceNumber == orig.InstanceNumber
        assert ds.PixelBandwidth == 130.0 and ds.InPlanePhaseEncodingDirection == "COL"
        assert ds.pixel_array.dtype == np.uint16 and ds.pixel_array.shape == (64, 64)
        assert ds.pixel_array.max() <= 4095  # BitsStored 12
        assert np.abs(ds.pixel_array.astype(float) - orig.pixel_array).max() > 50
    with np.load(out / "masks.npz") as npz:
        masks, flags = npz["masks"], npz["nondiagnostic"]
    assert masks.dtype == np.uint8 and masks.shape == (4, 64, 64)
    assert flags.dtype == bool and flags.shape == (4,)
    assert masks.sum() > 0
    # Ghosts along phase-encode (COL: axis 0) reach the background above and below the head.
    assert masks[:, :4, 28:36].any()


def test_the_same_seed_writes_the_same_pixels(tmp_path):
    _write_series(tmp_path / "in", slices=2)
    runs = []
    for name in ("a", "b"):
        result = _run(str(tmp_path / "in"), "--artifact", "motion", "--severity", "0.5",
                      "--seed", "7", "--out", str(tmp_path / name))  # fmt: skip
        assert result.returncode == 0, result.stderr
        runs.append(
            [pydicom.dcmread(f).pixel_array for f in sorted((tmp_path / name).glob("*.dcm"))]
        )
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_folder_without_dicom_files_is_one_clear_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("hello")
    result = _run(str(tmp_path / "in"), "--artifact", "noise", "--severity", "0.5",
                  "--out", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: no DICOM image files in {tmp_path / 'in'}"
    ]
    assert not (tmp_path / "out").exists()


def test_a_dicom_file_without_an_image_is_refused(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.save_as(folder / "report.dcm", enforce_file_format=True)
    result = _run(
        str(folder), "--artifact", "noise", "--severity", "0.5", "--out", str(tmp_path / "o")
    )
    assert result.returncode != 0 and "error: no DICOM image files" in result.stderr


def test_an_unknown_artifact_is_refused_by_the_parser(tmp_path):
    result = _run(str(tmp_path), "--artifact", "blur", "--severity", "0.5", "--out", str(tmp_path))
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_the_masks_are_those_of_the_pixels_written_when_the_artifact_saturates(tmp_path):
    """A bright 12-bit series under a strong bias field: pixels past 4095 are clipped in the
    file, and the masks describe the written pixels (against the originals), not the unclipped
    simulation."""
    from ml.simulate import ground_truth

    source = _write_series(tmp_path / "in", slices=2, brightness=3600)
    out = tmp_path / "out"
    result = _run(str(tmp_path / "in"), "--artifact", "bias_field", "--severity", "1",
                  "--seed", "1", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = [pydicom.dcmread(f).pixel_array for f in sorted(out.glob("*.dcm"))]
    assert any((w == 4095).sum() > 20 for w in written)  # saturated somewhere
    with np.load(out / "masks.npz") as npz:
        masks = npz["masks"]
    originals = sorted(source, key=lambda ds: ds.InstanceNumber)
    for mask, pixels, orig in zip(masks, written, originals, strict=True):
        expected, _ = ground_truth(orig.pixel_array.astype(np.float32), pixels.astype(np.float32))
        np.testing.assert_array_equal(mask, expected)
