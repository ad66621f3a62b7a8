"""``python -m ml dataset --out DIR [--slices N] [--seed N] [--workers N] [--splits ...]``: build
the data set. ``--pack FILE`` instead writes the sources of those splits to one file that a machine
without their packages (a GPU box) builds from with ``--sources FILE``."""

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
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--slices", type=int, default=2000, help="slices in all splits together")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (same bytes)")
    parser.add_argument(
        "--splits",
        nargs="+",
        choices=("train", "val", "test"),
        default=None,
        help="build only these splits (default all); the slices are those a full build makes",
    )
    parser.add_argument(
        "--sources",
        type=Path,
        default=None,
        help="read the source volumes from this pack (see --pack) instead of their packages",
    )
    parser.add_argument(
        "--pack",
        type=Path,
        default=None,
        help="write the sources of --splits to this file (float16, deflated) and exit",
    )
    parser.add_argument(
        "--style",
        choices=("artiscan", "torchio"),
        default="artiscan",
        help="artifact generator: ours, or five types made the way TorchIO makes them (to test "
        "the model on artifacts from code it never learnt from; same clean slices)",
    )
    parser.add_argument(
        "--noise-floor",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        default=None,
        help="draw every clean slice's noise-floor sigma (a fraction of the head's p99) "
        "uniformly from LO..HI in every split, e.g. 0.02 0.04 for a set as noisy as many "
        "clinical scans (default: each split's own range)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from ml.data.dataset import SPLIT_SOURCES, build_dataset
    from ml.data.sources import PACK_ENV, SourceMissing, pack_sources

    if args.sources is not None:
        if not args.sources.is_file():
            print(f"dataset: --sources {args.sources}: no such file", file=sys.stderr)
            return 2
        os.environ[PACK_ENV] = str(args.sources)  # the worker processes inherit it
    if args.pack is not None:
        names = [n for split in args.splits or SPLIT_SOURCES for n in SPLIT_SOURCES[split]]
        try:
            sizes = pack_sources(names, args.pack)
        except SourceMissing as exc:
            print(f"dataset: {exc}", file=sys.stderr)
            return 1
        for name, size in sizes.items():
            print(f"dataset: packed {name} ({size / 1e6:.1f} MB)")
        print(f"dataset: {len(sizes)} sources -> {args.pack}")
        return 0
    if args.out is None:
        print("dataset: --out is required (unless --pack)", file=sys.stderr)
        return 2
    floor = args.noise_floor
    if floor is not None and not 0.0 <= floor[0] <= floor[1] <= 1.0:
        print("dataset: --noise-floor needs 0 <= LO <= HI <= 1", file=sys.stderr)
        return 2
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
            splits=tuple(args.splits) if args.splits else None,
            style=args.style,
            noise_floor=None if floor is None else (floor[0], floor[1]),
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
