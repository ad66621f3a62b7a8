"""``python -m ml score SERIES_DIR --out OUT.npz [--model full|pruned|...|PATH]``: score one series.

OUT.npz keys (MISSION.md): ``sop_instance_uid`` str [S], ``classes`` str [K], ``masks`` uint8
[S, K, Rows, Columns], ``suitability`` float32 [S] (1 = fully diagnostic), ``series_suitability``
float32.

``--model full`` and ``--model pruned`` are served by ONNX Runtime from the shipped ``.onnx``
export of the same weights where ONNX Runtime is installed (a cold process then starts without
TensorFlow; the export is checked within 1e-4 of Keras), by Keras otherwise;
``full-keras``/``pruned-keras`` always load the ``.keras`` file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

KERAS_NAMES = {"full-keras": "full", "pruned-keras": "pruned"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "score", help="score one DICOM series: artifact masks and suitability", description=__doc__
    )
    parser.add_argument("series_dir", type=Path, help="folder holding the DICOM files of a series")
    parser.add_argument("--out", type=Path, required=True, help="OUT.npz")
    parser.add_argument(
        "--model",
        default="full",
        help="full, pruned (ONNX Runtime where installed, else Keras), full-keras, pruned-keras, "
        "full-onnx, pruned-onnx (shipped weights) or a .keras/.onnx/.tflite path",
    )
    parser.set_defaults(func=run)


def model_weights(name: str) -> str:
    """The weights ``--model name`` loads: a shipped name (:data:`ml.pipeline.SHIPPED`) or a
    path; ``full``/``pruned`` on the fastest installed runtime
    (:func:`ml.pipeline.fast_runtime`)."""
    from ml.pipeline import fast_runtime

    if name in KERAS_NAMES:
        return KERAS_NAMES[name]
    return fast_runtime(name) if name in ("full", "pruned") else name


def run(args: argparse.Namespace) -> int:
    from ml.pipeline import ScoringError, ScoringPipeline

    started = time.perf_counter()
    try:
        pipeline = ScoringPipeline.load(model_weights(args.model))
        result = pipeline.score_series_dir(args.series_dir)
    except (ScoringError, FileNotFoundError) as exc:
        print(f"score: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result.to_npz(args.out)
    found = [
        f"{name} {int(result.masks[:, k].any(axis=(1, 2)).sum())}"
        for k, name in enumerate(result.classes)
        if result.masks[:, k].any()
    ]
    served = pipeline.weights.name if pipeline.weights is not None else args.model
    print(
        f"score: {len(result.sop_instance_uid)} slices, series suitability "
        f"{result.series_suitability:.3f}, slices with a finding: {', '.join(found) or 'none'}; "
        f"{served}, {time.perf_counter() - started:.1f} s -> {args.out}"
    )
    return 0
