"""``python -m ml export MODEL --format onnx|litert [--int8] [--data DIR] [--out FILE]``.

Export for light serving. ONNX (checked against Keras within 1e-4) or LiteRT/TensorFlow Lite
(float32: within 1e-4; ``--int8``: full-integer post-training quantisation calibrated on slices
of ``--data`` or, without it, slices simulated on the spot; checked with looser, stated
tolerances — see :mod:`ml.model.litert`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export", help="export a model (ONNX or LiteRT, optionally int8)", description=__doc__
    )
    parser.add_argument("model", type=Path, help="a .keras model file")
    parser.add_argument("--format", default="onnx", choices=["onnx", "litert"])
    parser.add_argument(
        "--int8", action="store_true", help="LiteRT only: int8 post-training quantisation"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="int8 calibration slices from this `python -m ml dataset` dir (default: simulate)",
    )
    parser.add_argument(
        "--calibration-slices", type=int, default=128, help="int8: representative slices"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="default MODEL with .onnx / .tflite / .int8.tflite"
    )
    parser.set_defaults(func=run)


def _copy_thresholds(model: Path, out: Path) -> None:
    """The export serves the model's tuned thresholds: its ``.thresholds.json`` goes beside it
    under the export's own name (``MODEL.int8.tflite`` → ``MODEL.int8.thresholds.json``)."""

    from ml import ARTIFACT_TYPES
    from ml.model import network
    from ml.model.evaluate import thresholds_path

    source, target = thresholds_path(model), thresholds_path(out)
    if source.is_file() and source.resolve() != target.resolve():
        target.write_bytes(source.read_bytes())
    elif not source.is_file():
        size = network.working_size(network.load(model))
        if size is not None:
            # An untuned model at a working size: the sidecar still carries the size (a LiteRT
            # file has no other place for it), with the default thresholds.
            target.write_text(json.dumps({
                "thresholds": {name: 0.5 for name in ARTIFACT_TYPES}, "working_size": size,
            }, indent=2) + "\n")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.int8 and args.format != "litert":
        print("export: --int8 needs --format litert", file=sys.stderr)
        return 2
    if args.format == "litert":
        return _litert(args)
    from ml.model.export import TOLERANCE, export_onnx

    out = args.out or args.model.with_suffix(".onnx")
    try:
        difference = export_onnx(args.model, out)
    except ValueError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 1
    _copy_thresholds(args.model, out)
    size = out.stat().st_size / 1e6
    print(f"export: {out} ({size:.1f} MB), max |ONNX - Keras| {difference:.1e} <= {TOLERANCE}")
    return 0


def _litert_suffix(model: Path, int8: bool) -> str:
    """The default name's suffix: a file whose sidecar will name its mask modes (int8, or a
    model with a presence stack) must not share the model's own sidecar."""
    if int8:
        return ".int8.tflite"
    from ml.pipeline import sidecar_path

    path = sidecar_path(model)
    stacked = path.is_file() and bool(json.loads(path.read_text()).get("presence_stack"))
    return ".float.tflite" if stacked else ".tflite"


def _litert(args: argparse.Namespace) -> int:
    from ml.model import litert

    out = args.out or args.model.with_suffix(_litert_suffix(args.model, args.int8))
    _copy_thresholds(args.model, out)  # first: the export names an int8 file's modes in it
    try:
        result = litert.export_litert(
            args.model,
            out,
            int8=args.int8,
            data_dir=args.data,
            calibration_slices=args.calibration_slices,
        )
    except ValueError as exc:
        # The file that failed its check is gone (export_litert); so is the sidecar copied for
        # it, unless it is the model's own.
        from ml.model.evaluate import thresholds_path

        copied = thresholds_path(out)
        if copied.resolve() != thresholds_path(args.model).resolve():
            copied.unlink(missing_ok=True)
        print(f"export: {exc}", file=sys.stderr)
        return 1
    size = out.stat().st_size / 1e6
    if args.int8:
        print(
            f"export: {out} ({size:.2f} MB, int8), mean |mask diff| "
            f"{result['mask_mean_abs']:.4f} <= {litert.INT8_MEAN_TOLERANCE}, "
            f"max |presence/suitability diff| {result['scores_max_abs']:.3f} <= "
            f"{litert.INT8_MAX_TOLERANCE}, thresholded masks agree on "
            f"{100 * result['mask_agreement']:.2f} % >= {100 * litert.INT8_AGREEMENT:.0f} %"
        )
    else:
        print(
            f"export: {out} ({size:.2f} MB), max |LiteRT - Keras| {result['max_abs']:.1e} "
            f"<= {litert.TOLERANCE}"
        )
    return 0
