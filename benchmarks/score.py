"""Score a 32-slice 384 x 512 DICOM series from a cold process: full vs pruned, Keras/ONNX/LiteRT.

Each model runs in a fresh Python process that does what ``python -m ml score SERIES --out
OUT.npz`` does — imports the pipeline, loads the weights, reads and decodes the DICOM files,
scores them and writes ``OUT.npz`` — timing each step, then scores and writes the same series
once more warm. Then ``python -m ml score`` itself runs once more in its own process on the same
weights file, timed from outside (``cli s``: interpreter start-up included, what a user waits
for). Prints seconds (cold total = load + cold score + write, load, cold scoring, npz writing,
warm scoring + writing, cli), the process's peak RSS, the pruned/full ratio and the ratio to
the case study's 45 s on two K80 GPUs, and the machine's load average before and after. Figures
only; nothing is asserted. Usage: ``python benchmarks/score.py [--slices 32] [--repeat 2]``.

The LiteRT rows (``-litert``, ``-litert-int8``) are exported from the shipped ``.keras`` files into
a temporary directory first (``python -m ml export --format litert [--int8]``; int8 calibrated on
simulated slices) and served by the ``ai-edge-litert`` interpreter (XNNPACK, 2 threads), with the
``.keras`` file's thresholds sidecar beside them (mask thresholds, and the working size of a model
trained at one: the LiteRT file has no other place for it).

``--baseline DIR``: a folder of other ``artiscan-{full,pruned}.{keras,onnx}`` files (with their
sidecars), e.g. the previous round's weights from git; or a checkout of the repository (a folder
holding ``ml/pipeline.py``, e.g. ``git worktree add /tmp/base HEAD``), whose own code then scores
its own weights. Every model then runs from there too, in the same run, as ``NAME@baseline``,
and the ratios shipped/baseline are printed. ``--repeat N`` runs every row N times, alternating
which of the two sets goes first, and reports the median of each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASE_STUDY_SECONDS = 45.0
LITERT = ["full-litert", "pruned-litert", "full-litert-int8", "pruned-litert-int8"]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from ml.pipeline import ScoringPipeline
pipeline = ScoringPipeline.load(sys.argv[1])  # a .tflite file with its sidecar's modes
t1 = time.perf_counter()
result = pipeline.score_series_dir(sys.argv[2])
t2 = time.perf_counter()
result.to_npz(sys.argv[3])
t3 = time.perf_counter()
pipeline.score_series_dir(sys.argv[2]).to_npz(sys.argv[3])
t4 = time.perf_counter()
status = Path("/proc/self/status").read_text().splitlines()
peak_rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"cold_total_s": t3 - t0, "load_s": t1 - t0, "cold_score_s": t2 - t1,
                  "write_s": t3 - t2, "warm_score_s": t4 - t3,
                  "slices": len(result.sop_instance_uid),
                  "peak_rss_mb": peak_rss_kb / 1024}))
"""
"""What the benchmark's child process runs: argv ``MODEL SERIES_DIR OUT.npz``. Peak RSS is the
kernel's high-water mark of this process's own memory (``VmHWM``): ``ru_maxrss`` would also
count the parent's resident memory at the fork (Linux carries it over the exec), and the parent
holds TensorFlow once it has exported LiteRT files."""


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


def run_child(model: str, series: Path, out: Path, code: Path = ROOT) -> dict[str, Any]:
    """One model in a fresh process of the code at ``code`` (this checkout or a baseline one):
    the child's figures plus ``cli_s``, the wall-clock time of ``python -m ml score``."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, model, str(series), str(out)],
        cwd=code, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    started = time.perf_counter()
    cli = subprocess.run(
        [sys.executable, "-m", "ml", "score", str(series), "--out", str(out), "--model", model],
        cwd=code, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    figures["cli_s"] = time.perf_counter() - started
    if cli.returncode != 0:
        raise RuntimeError(cli.stderr[-2000:])
    return figures


def is_checkout(folder: Path) -> bool:
    """Whether ``folder`` is a checkout of this repository rather than a folder of weights."""
    return (folder / "ml" / "pipeline.py").is_file()


def weight_files(baseline: Path | None) -> dict[str, Path]:
    """The model files by name: the shipped ones, or those of the ``baseline`` folder (its
    ``ml/weights`` for a checkout)."""
    from ml.pipeline import SHIPPED

    if baseline is None:
        return dict(SHIPPED)
    folder = baseline / "ml" / "weights" if is_checkout(baseline) else baseline
    return {name: folder / path.name for name, path in SHIPPED.items()}


def export_litert(name: str, folder: Path, files: dict[str, Path], tag: str = "") -> Path:
    """Export the ``.keras`` of ``name`` (e.g. ``pruned-litert-int8``) into ``folder``, with its
    thresholds sidecar (thresholds, working size) under the export's name."""
    from ml.model.evaluate import thresholds_path
    from ml.model.litert import export_litert as export

    base, int8 = name.split("-")[0], name.endswith("-int8")
    out = folder / f"{name}{tag}.tflite"
    sidecar = thresholds_path(files[base])
    if sidecar.is_file():  # first: the export names an int8 file's modes in it
        thresholds_path(out).write_bytes(sidecar.read_bytes())
    export(files[base], out, int8=int8)
    return out


FIGURES = ("cold_total_s", "load_s", "cold_score_s", "write_s", "warm_score_s", "cli_s",
           "peak_rss_mb")  # fmt: skip


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


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
        help="a folder of other artiscan-*.keras/.onnx weights, or a checkout of the repository "
        "(its code and weights), to run beside the shipped ones",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per row (median reported)")
    args = parser.parse_args()
    sets = [("", weight_files(None), ROOT)]
    if args.baseline is not None:
        code = args.baseline.resolve() if is_checkout(args.baseline) else ROOT
        sets.append(("@baseline", weight_files(args.baseline), code))
    print(f"before: {load_line()}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        series = Path(tmp) / "series"
        series.mkdir()
        write_series(series, args.slices)
        models: dict[tuple[str, str], tuple[str, Path]] = {}
        for name in args.models:
            for tag, files, code in sets:
                if name in LITERT:
                    model = str(export_litert(name, Path(tmp), files, tag))
                elif name in files:
                    if not files[name].is_file():
                        print(f"{name}{tag}: no weight file at {files[name]}, skipped")
                        continue
                    model = str(files[name])
                else:
                    model = name
                models[(name, tag)] = (model, code)
        for repeat in range(args.repeat):
            for name in args.models:
                # Alternate which set goes first: a shared machine's load drifts.
                for tag, _, _ in sets[:: -1 if repeat % 2 else 1]:
                    if (name, tag) not in models:
                        continue
                    model, code = models[(name, tag)]
                    figures = run_child(model, series, Path(tmp) / "out.npz", code)
                    runs.setdefault(name + tag, []).append(figures)
    rows = {
        name: {key: statistics.median(r[key] for r in results) for key in FIGURES}
        for name, results in runs.items()
    }
    print(f"after: {load_line()}")
    print(
        f"{args.slices} slices of 384x512, 2 threads (intra-op), one process per model, "
        f"median of {args.repeat} run(s)"
    )
    print(
        "| model | cold total s | load s | cold score s | npz write s | warm score+write s "
        "| cli s | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['cold_total_s']:.2f} | {r['load_s']:.2f} | {r['cold_score_s']:.2f} "
            f"| {r['write_s']:.2f} | {r['warm_score_s']:.2f} | {r['cli_s']:.2f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    for tag in [t for t, _, _ in sets]:
        for suffix in ("", "-onnx", "-litert", "-litert-int8"):
            full, pruned = rows.get(f"full{suffix}{tag}"), rows.get(f"pruned{suffix}{tag}")
            if full and pruned:
                print(
                    f"pruned{suffix}{tag}/full{suffix}{tag} cold total ratio "
                    f"{pruned['cold_total_s'] / full['cold_total_s']:.2f}, warm "
                    f"{pruned['warm_score_s'] / full['warm_score_s']:.2f}; case study 45 s / "
                    f"cold total: pruned {CASE_STUDY_SECONDS / pruned['cold_total_s']:.0f}x, "
                    f"full {CASE_STUDY_SECONDS / full['cold_total_s']:.0f}x; / cli: pruned "
                    f"{CASE_STUDY_SECONDS / pruned['cli_s']:.0f}x, "
                    f"full {CASE_STUDY_SECONDS / full['cli_s']:.0f}x"
                )
    for name in args.models:
        new, old = rows.get(name), rows.get(f"{name}@baseline")
        if new and old:
            ratio = {key: new[key] / old[key] for key in ("cold_total_s", "warm_score_s", "cli_s")}
            print(
                f"{name}: cold total {new['cold_total_s']:.2f} s vs baseline "
                f"{old['cold_total_s']:.2f} s (ratio {ratio['cold_total_s']:.2f}), warm "
                f"{new['warm_score_s']:.2f} s vs {old['warm_score_s']:.2f} s (ratio "
                f"{ratio['warm_score_s']:.2f}), cli {new['cli_s']:.2f} s vs {old['cli_s']:.2f} s "
                f"(ratio {ratio['cli_s']:.2f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
