"""``python -m ml dataset --out DIR [--slices N] [--seed N] [--workers N]``: build the data set."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dataset",
        help="build the simulated train/val/test set from packaged brain MR",
        description="Build sharded .npz train/val/test sets and manifest.json.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--slices", type=int, default=2000, help="slices in all splits together")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (same bytes)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ml.data.dataset import build_dataset
    from ml.data.sources import SourceMissing

    if args.slices < 3:
        print("dataset: --slices must be at least 3 (one per split)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        manifest = build_dataset(
            args.out,
            slices_total=args.slices,
            seed=args.seed,
            workers=args.workers,
            progress=not args.quiet,
        )
    except SourceMissing as exc:
        print(f"dataset: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    for name, message in manifest["missing_sources"].items():
        print(f"dataset: skipped {name}: {message}", file=sys.stderr)
    splits = ", ".join(f"{s} {v['slices']}" for s, v in manifest["splits"].items())
    print(
        f"dataset: {args.slices} slices ({splits}) in {len(manifest['shards'])} shards, "
        f"{size / 1e6:.1f} MB, {elapsed:.1f} s -> {args.out}"
    )
    return 0
