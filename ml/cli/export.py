"""``python -m ml export MODEL --format onnx [--out FILE]``: export for light serving.

ONNX only: the export is checked against the Keras model (outputs within 1e-4). LiteRT and
int8 are not implemented yet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("export", help="export a model (ONNX)", description=__doc__)
    parser.add_argument("model", type=Path, help="a .keras model file")
    parser.add_argument("--format", default="onnx", choices=["onnx"])
    parser.add_argument("--out", type=Path, default=None, help="default MODEL with .onnx")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ml.model.export import TOLERANCE, export_onnx

    out = args.out or args.model.with_suffix(".onnx")
    try:
        difference = export_onnx(args.model, out)
    except ValueError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 1
    size = out.stat().st_size / 1e6
    print(f"export: {out} ({size:.1f} MB), max |ONNX - Keras| {difference:.1e} <= {TOLERANCE}")
    return 0
