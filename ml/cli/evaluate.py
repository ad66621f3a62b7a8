"""``python -m ml evaluate MODEL --data DIR [--split test] [--out DIR]``: evaluation report.

Per-type IoU with intersection and union summed over all slices, the frequency-weighted mean
IoU, the suitability ROC AUC, calibration, and breakdowns per source/sequence/field/matrix;
writes report.json, roc.png and iou.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="evaluate a model on a held-out split", description=__doc__
    )
    parser.add_argument("model", type=Path, help="a .keras model file")
    parser.add_argument("--data", type=Path, required=True, help="a `python -m ml dataset` dir")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--out", type=Path, default=None, help="default MODEL's dir/eval-SPLIT")
    parser.add_argument(
        "--tune",
        action="store_true",
        help="first tune per-type mask modes and thresholds on the val split (writes "
        "MODEL.thresholds.json and saves MODEL again with the modes in its graph)",
    )
    parser.add_argument(
        "--pixel-only",
        action="store_true",
        help="with --tune: keep every type's per-pixel mask (no gated/whole modes)",
    )
    parser.add_argument(
        "--no-stack",
        action="store_true",
        help="with --tune: serve the network's own presence (no presence stack with the "
        "slice's k-space)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ml.model.evaluate import evaluate, thresholds_path, tune_thresholds

    if args.tune:
        tuned = tune_thresholds(
            args.model, args.data, "val", modes=not args.pixel_only, stack=not args.no_stack
        )
        print(f"evaluate: modes and thresholds tuned on val -> {thresholds_path(args.model)}")
        print("  " + ", ".join(
            f"{k} {tuned['modes'][k]} {v:.2f}" for k, v in tuned["thresholds"].items()
        ))  # fmt: skip
        for name, auc in (tuned.get("presence_stack_roc_auc") or {}).items():
            if auc["kept"]:
                print(
                    f"  {name} presence stacked with the k-space: val ROC AUC "
                    f"{auc['auc_network']:.3f} -> {auc['auc_stacked']:.3f}"
                )
        if "suitability_platt" in tuned:
            platt = tuned["suitability_platt"]
            print(f"  suitability Platt scaling a {platt['a']:.3f}, b {platt['b']:.3f}")
    out = args.out or args.model.parent / f"eval-{args.split}"
    result = evaluate(args.model, args.data, out, args.split)
    print(format_table(result))
    print(f"evaluate: report -> {out / 'report.json'}")
    return 0


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table of the headline figures of an evaluation report."""
    lines = ["| type | IoU | slices with type |", "|---|---|---|"]
    for name, value in result["iou"].items():
        shown = "n/a" if value is None else f"{value:.3f}"
        lines.append(f"| {name} | {shown} | {result['slices_with_type'][name]} |")
    fw, auc = result["frequency_weighted_iou"], result["suitability_roc_auc"]
    lines.append(f"| **frequency-weighted IoU** | {fw:.3f} | |" if fw is not None else "")
    lines.append(f"| **suitability ROC AUC** | {auc:.3f} | |" if auc is not None else "")
    lines.append(f"| calibration ECE / Brier | {result['calibration']['ece']:.3f} / "
                 f"{result['calibration']['brier']:.3f} | |")  # fmt: skip
    return "\n".join(line for line in lines if line)
