"""``python -m ml prune RUN_DIR --to 0.25``: structured pruning of a trained run.

Energy-aware channel ordering (Yang, Chen and Sze 2017) and lottery-ticket rewinding (Frankle
and Carbin 2018), written in Keras 3 (tensorflow-model-optimization does not accept Keras 3
models). Writes RUN_DIR/pruned/best.keras and prune.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "prune", help="prune a trained run to a fraction of its parameters", description=__doc__
    )
    parser.add_argument("run_dir", type=Path, help="a `python -m ml train` run directory")
    parser.add_argument("--to", type=float, default=0.25, help="parameter fraction to keep")
    parser.add_argument("--rounds", type=int, default=2, help="prune/rewind/retrain rounds")
    parser.add_argument("--epochs", type=int, default=6, help="retraining epochs per round")
    parser.add_argument(
        "--final-epochs",
        type=int,
        default=None,
        help="retraining epochs of the last round (default --epochs)",
    )
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (run's default)")
    parser.add_argument(
        "--min-fraction", type=float, default=0.0, help="share of channels every layer keeps"
    )
    parser.add_argument("--out", type=Path, default=None, help="default RUN_DIR/pruned")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="end within this many seconds (each round's epochs cut to its share)",
    )
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ml.model.prune import prune_run

    if not 0 < args.to < 1:
        print("prune: --to must lie strictly between 0 and 1", file=sys.stderr)
        return 2
    for needed in ("best.keras", "rewind.weights.h5", "config.json"):
        if not (args.run_dir / needed).is_file():
            print(f"prune: {args.run_dir} has no {needed}", file=sys.stderr)
            return 1
    report = prune_run(
        args.run_dir,
        to=args.to,
        rounds=args.rounds,
        epochs=args.epochs,
        final_epochs=args.final_epochs,
        steps=args.steps,
        min_fraction=args.min_fraction,
        out=args.out,
        progress=not args.quiet,
        time_budget=args.time_budget,
    )
    print(
        f"prune: {report['full_params']} -> {report['pruned_params']} parameters "
        f"({100 * report['fraction']:.1f} %) -> {(args.out or args.run_dir / 'pruned')}"
    )
    return 0
