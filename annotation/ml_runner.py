"""``python -m annotation.ml_runner``: fine-tune, tune thresholds, evaluate — one child process,
one TensorFlow import. No Django here: it talks to its parent in JSON lines on stdout
(``{"progress": 0.4, "message": …}`` … then ``{"result": {...}}``).

Training is ``ml.model.train.train`` with ``init`` = the deployed weights (what ``python -m ml
train --init`` runs); evaluation is ``ml.model.evaluate.evaluate`` (what ``python -m ml
evaluate`` runs), so the figures are those of ``ml evaluate``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import threading
from pathlib import Path
from typing import Any

SUMMARY_KEYS = ("slices", "frequency_weighted_iou", "suitability_roc_auc", "iou")


def _say(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    out = {k: report.get(k) for k in SUMMARY_KEYS}
    out["ece"] = report["calibration"]["ece"]
    out["brier"] = report["calibration"]["brier"]
    return out


def _has_split(data: Path, split: str) -> bool:
    if not (data / "manifest.json").is_file():
        return False
    manifest = json.loads((data / "manifest.json").read_text())
    return any(s["split"] == split for s in manifest["shards"])


def _watch(history: Path, epochs: int, stop: threading.Event) -> None:
    seen = 0
    while not stop.wait(0.5):
        if not history.is_file():
            continue
        try:
            with history.open() as f:
                done = len(list(csv.DictReader(f)))
        except OSError:
            continue
        if done != seen:
            seen = done
            _say(progress=round(0.8 * done / epochs, 3), message=f"epoch {done} of {epochs}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m annotation.ml_runner")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--init", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from ml.model.evaluate import evaluate, tune_thresholds
    from ml.model.train import TrainConfig, train

    _say(progress=0.0, message="training")
    run = args.out / "run"
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(run / "history.csv", args.epochs, stop), daemon=True
    )
    watcher.start()
    config = TrainConfig(
        data=str(args.data),
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        batch_size=args.batch,
        crop=args.crop,
        learning_rate=args.lr,
        seed=args.seed,
        val_batches=2,
        init=str(args.init),
    )
    best = train(config, run, progress=False)
    stop.set()
    watcher.join()
    _say(progress=0.8, message="tuning the candidate's thresholds on the val split")
    tune_thresholds(best, args.data, "val")
    metrics: dict[str, dict[str, Any]] = {"candidate": {}, "deployed": {}}
    targets = [("annotated", args.data / "annotated"), ("simulated", args.data / "simulated")]
    steps = [(name, data) for name, data in targets if _has_split(data, "test")]
    for k, (name, data) in enumerate(steps):
        _say(progress=round(0.85 + 0.15 * k / len(steps), 3), message=f"evaluating on {name}")
        for who, model in (("candidate", best), ("deployed", args.init)):
            report = evaluate(model, data, args.out / f"eval-{who}-{name}", "test")
            metrics[who][name] = _summary(report)
    _say(result={"best": str(best), "metrics": metrics})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
