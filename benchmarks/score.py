"""Score a 32-slice 384 x 512 DICOM series from a cold process: full vs pruned, Keras/ONNX/LiteRT.

Each model runs in a fresh Python process that imports the pipeline, loads the weights, reads
the DICOM files and writes masks and indices (what ``python -m ml score`` does), then scores the
same series once more warm. Prints seconds (cold total, load, cold scoring, warm scoring) and
the process's peak RSS, the pruned/full ratio and the ratio to the case study's 45 s on two
K80 GPUs. Figures only; nothing is asserted. Usage: ``python benchmarks/score.py [--slices 32]``.

The LiteRT rows (``-litert``, ``-litert-int8``) are exported from the shipped ``.keras`` files into
a temporary directory first (``python -m ml export --format litert [--int8]``; int8 calibrated on
simulated slices) and served by the ``ai-edge-litert`` interpreter (XNNPACK, 2 threads), with the
``.keras`` file's thresholds sidecar beside them (mask thresholds, and the working size of a model
trained at one: the LiteRT file has no other place for it).

``--baseline DIR``: a folder of other ``artiscan-{full,pruned}.{keras,onnx}`` files (with their
sidecars), e.g. the previous round's weights from git; every model then runs from there too, in
the same run, as ``NAME@baseline``, and the warm-time ratio shipped/baseline is printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASE_STUDY_SECONDS = 45.0
LITERT = ["full-litert", "pruned-litert", "full-litert-int8", "pruned-litert-int8"]

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from pathlib import Path
from ml.pipeline import ScoringPipeline
if sys.argv[1].endswith(".tflite"):
    from ml.model.litert import LiteRTModel
    pipeline = ScoringPipeline(LiteRTModel(sys.argv[1]), Path(sys.argv[1]))
else:
    pipeline = ScoringPipeline.load(sys.argv[1])
t1 = time.perf_counter()
result = pipeline.score_series_dir(sys.argv[2])
t2 = time.perf_counter()
pipeline.score_series_dir(sys.argv[2])
t3 = time.perf_counter()
print(json.dumps({"cold_total_s": t2 - t0, "load_s": t1 - t0, "cold_score_s": t2 - t1,
                  "warm_score_s": t3 - t2, "slices": len(result.sop_instance_uid),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_series(folder: Path, slices: int, rows: int = 384, cols: int = 512) -> None:
    """A synthetic head (ellipses + noise) as ``slices`` uint16 MR DICOM files."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    yy, xx = np.mgrid[:rows, :cols].astype(np.float32)
    rng = np.random.default_rng(0)
    study, series = generate_uid(), generate_uid()
    for index in range(slices):
        r = ((yy - rows / 2) / (0.42 * rows)) ** 2 + ((xx - cols / 2) / (0.3 * cols)) ** 2
        image = np.where(r <= 1, 0.7, 0.0) + np.where(r <= 0.85, 0.2, 0.0)
        image = image * (1 - 0.01 * index) + rng.normal(0, 0.02, image.shape)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.InstanceNumber = "MR", index + 1
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [0.5, 0.5]
        ds.PixelBandwidth, ds.MagneticFieldStrength = 150.0, 3.0
        ds.InPlanePhaseEncodingDirection = "ROW"
        ds.EchoTime, ds.RepetitionTime = 90.0, 4000.0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.clip(np.rint(image * 3000), 0, 4095).astype(np.uint16).tobytes()
        ds.save_as(folder / f"{index:04d}.dcm", enforce_file_format=True)


def run_child(model: str, series: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, model, str(series)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def weight_files(baseline: Path | None) -> dict[str, Path]:
    """The model files by name: the shipped ones, or those of the ``baseline`` folder."""
    from ml.pipeline import SHIPPED

    if baseline is None:
        return dict(SHIPPED)
    return {name: baseline / path.name for name, path in SHIPPED.items()}


def export_litert(name: str, folder: Path, files: dict[str, Path], tag: str = "") -> Path:
    """Export the ``.keras`` of ``name`` (e.g. ``pruned-litert-int8``) into ``folder``, with its
    thresholds sidecar (thresholds, working size) under the export's name."""
    from ml.model.evaluate import thresholds_path
    from ml.model.litert import export_litert as export

    base, int8 = name.split("-")[0], name.endswith("-int8")
    out = folder / f"{name}{tag}.tflite"
    export(files[base], out, int8=int8)
    sidecar = thresholds_path(files[base])
    if sidecar.is_file():
        thresholds_path(out).write_bytes(sidecar.read_bytes())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument(
        "--models",
        nargs="*",
        default=["full", "pruned", "full-onnx", "pruned-onnx", *LITERT],
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a folder of other artiscan-*.keras/.onnx weights to run beside the shipped ones",
    )
    args = parser.parse_args()
    sets = [("", weight_files(None))]
    if args.baseline is not None:
        sets.append(("@baseline", weight_files(args.baseline)))
    with tempfile.TemporaryDirectory() as tmp:
        series = Path(tmp) / "series"
        series.mkdir()
        write_series(series, args.slices)
        rows: dict[str, dict[str, Any]] = {}
        for name in args.models:
            for tag, files in sets:
                if name in LITERT:
                    model = str(export_litert(name, Path(tmp), files, tag))
                elif name in files:
                    if not files[name].is_file():
                        print(f"{name}{tag}: no weight file at {files[name]}, skipped")
                        continue
                    model = str(files[name])
                else:
                    model = name
                rows[name + tag] = run_child(model, series)
    print(f"{args.slices} slices of 384x512, 2 threads (intra-op), one process per model")
    print("| model | cold total s | load s | cold score s | warm score s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['cold_total_s']:.2f} | {r['load_s']:.2f} | {r['cold_score_s']:.2f} "
            f"| {r['warm_score_s']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    for suffix in ("", "-onnx", "-litert", "-litert-int8"):
        full, pruned = rows.get(f"full{suffix}"), rows.get(f"pruned{suffix}")
        if full and pruned:
            print(
                f"pruned{suffix}/full{suffix} warm time ratio "
                f"{pruned['warm_score_s'] / full['warm_score_s']:.2f}; "
                f"case study 45 s / pruned{suffix} cold total "
                f"{CASE_STUDY_SECONDS / pruned['cold_total_s']:.0f}x"
            )
    for name in args.models:
        new, old = rows.get(name), rows.get(f"{name}@baseline")
        if new and old:
            print(
                f"{name}: warm {new['warm_score_s']:.2f} s vs baseline {old['warm_score_s']:.2f} s "
                f"(ratio {new['warm_score_s'] / old['warm_score_s']:.2f}), cold total "
                f"{new['cold_total_s']:.2f} s vs {old['cold_total_s']:.2f} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
