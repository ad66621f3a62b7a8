"""``python -m ml train --data DIR --out RUN [--epochs N ...] [--init MODEL]``: train or fine-tune.

Running the same command again resumes the run directory; ``--init`` starts from a saved model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ml import ARTIFACT_TYPES


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the multi-task artifact network (resumes a run directory)",
        description=__doc__,
    )
    parser.add_argument("--data", type=Path, required=True, help="a `python -m ml dataset` dir")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128, help="square training crop, pixels")
    parser.add_argument(
        "--working",
        type=int,
        default=None,
        help="working size: train on whole slices resampled to this long side (multiple of 16; "
        "the models carry it and every consumer resamples there and back); default: native "
        "resolution, --crop crops",
    )
    parser.add_argument("--base", type=int, default=8, help="channels of the first level")
    parser.add_argument("--depth", type=int, default=4, help="pooling levels")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rewind-epoch", type=int, default=1, help="epoch kept for rewinding")
    parser.add_argument(
        "--foreground",
        type=float,
        default=0.0,
        help="share of crops placed around an artifact pixel (0 = uniform crops)",
    )
    parser.add_argument(
        "--balance",
        action="store_true",
        help="draw slices with rare artifact types more often (1/sqrt of the type's frequency)",
    )
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="fine-tune: start from this .keras model (its architecture; --base/--depth ignored)",
    )
    parser.add_argument(
        "--reset-masks",
        nargs="+",
        choices=ARTIFACT_TYPES,
        default=None,
        metavar="TYPE",
        help="with --init: start these types' mask channels afresh (for channels that died in "
        "the starting model)",
    )
    parser.add_argument("--limit", type=int, default=None, help="at most N slices per split")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="end within this many seconds: after each epoch --epochs is cut to what the time "
        "left holds (the cosine schedule follows; config.json records the number)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes that load the shards and threads that assemble batches ahead (same "
        "batches whatever the number; a GPU needs several)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ml.model.train import TrainConfig, train

    if args.working is not None and (args.working < 16 or args.working % 16):
        print(
            f"train: --working {args.working}: must be a positive multiple of 16", file=sys.stderr
        )
        return 2
    if args.init is not None and not args.init.is_file():
        print(f"train: --init {args.init}: no such model file", file=sys.stderr)
        return 2
    if args.reset_masks and args.init is None:
        print("train: --reset-masks needs --init (a fresh network has no dead channels)",
              file=sys.stderr)  # fmt: skip
        return 2
    config = TrainConfig(
        data=str(args.data),
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        batch_size=args.batch,
        crop=args.crop,
        base=args.base,
        depth=args.depth,
        learning_rate=args.lr,
        seed=args.seed,
        rewind_epoch=args.rewind_epoch,
        limit=args.limit,
        foreground=args.foreground,
        balance=args.balance,
        init=str(args.init) if args.init else None,
        reset_masks=list(args.reset_masks) if args.reset_masks else None,
        working=args.working,
        workers=args.workers,
        time_budget=args.time_budget,
    )
    started = time.perf_counter()
    best = train(config, args.out, progress=not args.quiet)
    print(f"train: {time.perf_counter() - started:.0f} s, best model {best}")
    return 0
