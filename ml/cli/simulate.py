"""``python -m ml simulate SERIES_DIR --artifact NAME --severity S [--seed N] --out OUT_DIR``.

Reads one DICOM series, applies one simulated artifact to every slice and writes the artifacted
series (new SOP Instance and Series Instance UIDs, acquisition headers kept, pixel values mapped
back through the rescale slope/intercept and clipped to the stored bit range) plus
``OUT_DIR/masks.npz``: ``masks`` uint8 ``[S, Rows, Columns]`` and ``nondiagnostic`` bool ``[S]``,
slices in series order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ml import ARTIFACT_TYPES


class SeriesError(Exception):
    """The input is not a readable single-frame DICOM image series."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate", help="apply one simulated MR artifact to a DICOM series", description=__doc__
    )
    parser.add_argument("series_dir", type=Path, help="folder holding the DICOM files of a series")
    parser.add_argument("--artifact", required=True, choices=ARTIFACT_TYPES)
    parser.add_argument("--severity", required=True, type=float, help="0 (none) to 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.set_defaults(func=run)


DERIVED_MODALITIES = frozenset({"SEG", "SR", "PR", "KO", "REG", "RWV"})
"""Modalities of objects that describe images rather than being images: a segmentation holds
pixel data (one frame per segment and slice) and is skipped like a file without any."""


def read_series(series_dir: Path) -> list[Any]:
    """The image datasets of ``series_dir`` sorted by InstanceNumber, then position (files that
    are not DICOM, hold no pixel data or are of a :data:`DERIVED_MODALITIES` are skipped)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not series_dir.is_dir():
        raise SeriesError(f"{series_dir} is not a folder")
    datasets = []
    for path in sorted(p for p in series_dir.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue  # not DICOM: a series folder may hold other files
        if "PixelData" not in ds or str(ds.get("Modality", "")).upper() in DERIVED_MODALITIES:
            continue  # no image, or derived data beside the images (e.g. our own DICOM SEG)
        datasets.append(ds)
    if not datasets:
        raise SeriesError(f"no DICOM image files in {series_dir}")
    others = sorted({str(ds.get("Modality", "")).upper() for ds in datasets} - {"MR", ""})
    if others:
        raise SeriesError(
            f"not an MR series: {series_dir} holds {', '.join(others)} images "
            "(the model judges brain MR only)"
        )
    if any("Rows" not in ds or "Columns" not in ds for ds in datasets):
        raise SeriesError(f"a file in {series_dir} has pixel data but no Rows or Columns")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise SeriesError(
            f"{len(series)} series in {series_dir} (its sub-folders included): score one "
            "series folder at a time"
        )
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(shapes) != 1:
        raise SeriesError(f"slices of different sizes in {series_dir}: {sorted(shapes)}")

    def key(ds: Any) -> tuple[float, float]:
        position = getattr(ds, "ImagePositionPatient", None)
        return (
            float(getattr(ds, "InstanceNumber", 0) or 0),
            float(position[2]) if position else 0.0,
        )

    return sorted(datasets, key=key)


def _decoded(ds: Any) -> np.ndarray[Any, Any]:
    try:
        arr: np.ndarray[Any, Any] = ds.pixel_array
    except Exception as exc:  # pydicom raises many kinds for broken or unsupported pixel data
        raise SeriesError(f"cannot decode the pixels of a file: {exc}") from exc
    if arr.ndim != 2:
        raise SeriesError("not a single-frame greyscale image (multi-frame or colour)")
    if not np.issubdtype(arr.dtype, np.integer):
        raise SeriesError("non-integer pixel data")
    return arr


def _rescale(ds: Any) -> tuple[float, float]:
    """The file's (RescaleSlope, RescaleIntercept): stored values to pixel values."""
    return float(getattr(ds, "RescaleSlope", 1) or 1), float(
        getattr(ds, "RescaleIntercept", 0) or 0
    )


def _to_values(ds: Any, stored: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    slope, intercept = _rescale(ds)
    return np.asarray(stored.astype(np.float32) * slope + intercept, dtype=np.float32)


def _pixels(ds: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
    return _to_values(ds, _decoded(ds))


def _stored_values(ds: Any, image: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, Any]:
    """``image`` as the file will hold it: rounded and clipped to what BitsStored allows."""
    dtype = ds.pixel_array.dtype
    bits = int(getattr(ds, "BitsStored", np.iinfo(dtype).bits) or np.iinfo(dtype).bits)
    signed = int(getattr(ds, "PixelRepresentation", 0) or 0) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope, intercept = _rescale(ds)
    stored: np.ndarray[Any, Any] = np.clip(np.rint((image - intercept) / slope), low, high)
    return stored.astype(dtype)


def _store(ds: Any, image: np.ndarray[Any, np.dtype[np.float32]], series_uid: str) -> Any:
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds.PixelData = _stored_values(ds, image).tobytes()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SeriesInstanceUID = series_uid
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue", "WindowCenter"):
        if keyword in ds:
            delattr(ds, keyword)
    if "WindowWidth" in ds:
        del ds.WindowWidth
    return ds


def run(args: argparse.Namespace) -> int:
    from pydicom.uid import generate_uid

    from ml.simulate import AcquisitionHeader, ground_truth, simulate

    try:
        if not 0.0 <= args.severity <= 1.0:
            raise SeriesError(f"--severity must lie in [0, 1], not {args.severity}")
        datasets = read_series(args.series_dir)
        for ds in datasets:
            _decoded(ds)
    except SeriesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    progress: Any = None
    try:
        from tqdm import tqdm

        progress = tqdm(total=len(datasets), desc=f"simulate {args.artifact}", file=sys.stderr)
    except ImportError:
        pass
    args.out.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    masks = np.zeros((len(datasets), datasets[0].Rows, datasets[0].Columns), dtype=np.uint8)
    nondiagnostic = np.zeros(len(datasets), dtype=bool)
    for index, ds in enumerate(datasets):
        clean = _pixels(ds)
        header = AcquisitionHeader.from_dataset(ds)
        # Each slice gets its own draw, reproducible from the command's seed.
        artifacted = simulate(
            clean, args.artifact, args.severity, header, args.seed * 100003 + index
        )
        # Against what the file will hold (rounded, clipped to BitsStored): a bright series whose
        # artifact saturates must not get a mask the written pixels do not show.
        mask, flag = ground_truth(clean, _to_values(ds, _stored_values(ds, artifacted)))
        masks[index] = mask
        nondiagnostic[index] = bool(flag)
        _store(ds, artifacted, series_uid).save_as(args.out / f"{index + 1:04d}.dcm")
        if progress is not None:
            progress.update(1)
    if progress is not None:
        progress.close()
    np.savez_compressed(args.out / "masks.npz", masks=masks, nondiagnostic=nondiagnostic)
    return 0
