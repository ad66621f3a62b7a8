"""Training loop: random crops or whole slices at a working size, mixed losses, checkpoints,
resumable, seeded.

With ``working`` set (``--working 256``) every slice is resampled to its working grid (long side
``working``, :func:`ml.model.preprocess.working_shape`) and the network trains on whole slices
there (batches of one working shape; mask targets = area fractions; presence = the whole slice's
labels); the saved models carry the working size (:func:`ml.model.network.working_size`), which
every consumer honours. Without it: random ``crop``² crops at the native resolution.

A run directory holds ``config.json`` (the arguments), ``last.keras`` (model + optimizer after
the latest epoch), ``best.keras`` (the epoch of the highest tuned validation IoU,
:func:`ml.model.evaluate.tuned_batch_iou`; between equals the lower validation loss),
``rewind.weights.h5`` (weights after the rewind epoch, for lottery-ticket rewinding),
``history.csv`` and ``curve.png``. Running
the same command again resumes from ``last.keras``; the data stream of epoch ``e`` comes from
``default_rng([seed, e])`` so a resumed run draws the same crops as an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ml.model.data import (
    Split,
    class_weights,
    crop_batch,
    draw_whole_batch,
    load_split,
    shape_groups,
    slice_weights,
    whole_batch,
)
from ml.model.evaluate import tuned_batch_iou


@dataclass
class TrainConfig:
    """Arguments of a run (stored as ``config.json``)."""

    data: str
    epochs: int = 20
    steps_per_epoch: int = 100
    batch_size: int = 8
    crop: int = 128
    base: int = 8
    depth: int = 4
    learning_rate: float = 2e-3
    seed: int = 0
    rewind_epoch: int = 1
    val_batches: int = 8
    limit: int | None = None
    foreground: float = 0.0
    """Share of training crops placed around an artifact pixel (:func:`crop_batch`)."""
    balance: bool = False
    """Draw training slices with :func:`slice_weights` (rare types more often) instead of
    uniformly."""
    init: str | None = None
    """A ``.keras`` model to start from (fine-tuning): its architecture and weights, not its
    optimizer state; ``base``/``depth`` are then ignored, and ``working`` defaults to the
    model's own working size."""
    reset_masks: list[str] | None = None
    """With ``init``: the artifact types whose mask channels start afresh
    (:func:`ml.model.network.reset_mask_channels`), for channels that died in the starting
    model."""
    working: int | None = None
    """Working size (long side, pixels): whole-slice training on the working grid; None =
    native-resolution crops of ``crop``²."""
    time_budget: float | None = None
    """Seconds the run may take (loading included): after each epoch the number of epochs is set
    to what the time left holds at the last epoch's pace, at most the ``epochs`` asked for, and
    ``config.json`` records it; the cosine schedule follows the new length. For a GPU lent for
    minutes; None = exactly ``epochs``."""
    workers: int = 1
    """Processes that read and resample the shards, and threads that assemble the next batches
    while the network trains on this one (a GPU otherwise waits on NumPy). The batches are the
    same whatever the number."""


def _val_batches(split: Split, config: TrainConfig) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    rng = np.random.default_rng([config.seed, 10_000])
    batches = []
    groups = shape_groups(split) if config.working else {}
    for _ in range(config.val_batches):
        if config.working:
            idx = draw_whole_batch(split, groups, config.batch_size, rng)
            batches.append(whole_batch(split, idx, rng, augment=False))
            continue
        idx = rng.integers(0, len(split), size=config.batch_size)
        batches.append(crop_batch(split, idx, config.crop, rng, augment=False))
    return batches


Batch = tuple[dict[str, Any], dict[str, Any]]


def _fit_to_budget(
    config: TrainConfig,
    ceiling: int,
    done: int,
    run_started: float,
    pace: float,
    out: Path,
) -> TrainConfig:
    """``config`` with ``epochs`` set to what ``time_budget`` still holds after ``done`` epochs
    at ``pace`` seconds an epoch (:func:`_epoch_pace`), at most ``ceiling``."""
    assert config.time_budget is not None
    left = config.time_budget - (time.perf_counter() - run_started)
    fits = min(ceiling, done + max(int(left // max(pace, 1e-6)), 0))
    if fits == config.epochs:
        return config
    config = replace(config, epochs=fits)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    return config


def _epoch_pace(seconds: float, step_seconds: list[float], first: bool) -> float:
    """Seconds the next epoch will take, from the last one's ``seconds`` (validation and saves
    included) and its steps' own times.

    The first epoch a process runs also compiled every batch shape, for the training step, the
    validation loss and the tuned IoU's predictions (XLA on the H200: 150 s of a 400-step epoch
    whose steps then took 0.037 s each). Its steps count at their median, and the rest of it
    (waits for data, validation, saves) at most a fifth of those steps or 5 s, whichever is
    more, so a budgeted run is not cut to one epoch by its compilation (the second GPU
    session's were, twice). Where that undercounts (a loader slower than the network), the
    second epoch's own pace corrects it. Later epochs count as they ran."""
    if not first or not step_seconds:
        return seconds
    steady = float(np.median(step_seconds)) * len(step_seconds)
    rest = seconds - sum(step_seconds)
    return steady + min(rest, max(5.0, 0.2 * steady))


def _training_batches(
    config: TrainConfig,
    split: Split,
    groups: dict[tuple[int, int], Any],
    sampling: Any,
    rng: np.random.Generator,
) -> Iterator[Batch]:
    """One epoch's ``steps_per_epoch`` training batches, in order.

    The slices of each batch and a seed for its augmentation are drawn here from ``rng``; the
    batches themselves are assembled ``config.workers`` at a time ahead in threads (NumPy's
    copies and arithmetic leave the GIL), so the stream is the same whatever the number.
    """

    def make(idx: Any, seed: int) -> Batch:
        batch_rng = np.random.default_rng(seed)
        if config.working:
            return whole_batch(split, idx, batch_rng, augment=True)
        return crop_batch(
            split, idx, config.crop, batch_rng, augment=True, foreground=config.foreground
        )

    def draw() -> tuple[Any, int]:
        if config.working:
            idx = draw_whole_batch(split, groups, config.batch_size, rng, sampling)
        else:
            idx = rng.choice(len(split), size=config.batch_size, p=sampling)
        return idx, int(rng.integers(2**63))

    steps = config.steps_per_epoch
    if config.workers <= 1:
        for _ in range(steps):
            yield make(*draw())
        return
    ahead = max(2, config.workers)
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        pending: deque[Future[Batch]] = deque()
        for step in range(steps):
            while len(pending) < ahead and step + len(pending) < steps:
                pending.append(pool.submit(make, *draw()))
            yield pending.popleft().result()


def write_curve(history: list[dict[str, float]], path: Path) -> None:
    """Training and validation loss per epoch, and the tuned validation IoU, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [int(h["epoch"]) for h in history]
    ax.plot(epochs, [h["loss"] for h in history], label="train loss")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (mask BCE+Dice, presence, suitability)")
    ax.grid(alpha=0.3)
    iou = ax.twinx()
    iou.plot(epochs, [h.get("val_iou", np.nan) for h in history], "g--",
             label="validation IoU (tuned, right)")  # fmt: skip
    iou.set_ylabel("frequency-weighted IoU")
    iou.set_ylim(0, 1)
    lines = ax.get_legend_handles_labels()
    more = iou.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _merit(row: dict[str, float]) -> tuple[float, float]:
    """What ``best.keras`` is kept by: the tuned validation IoU, then the lower validation loss
    (a run's first epochs may all have IoU 0). An epoch of a run from before the IoU was
    recorded counts as IoU 0."""
    return row.get("val_iou", 0.0), -row["val_loss"]


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with path.open() as f:
        # An epoch written before a column existed has it empty.
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


def train(
    config: TrainConfig,
    out: Path,
    *,
    model: Any | None = None,
    progress: bool = True,
    train_split: Split | None = None,
    val_split: Split | None = None,
) -> Path:
    """Train (or resume) into ``out``; returns the path of ``best.keras``.

    ``model``: start from this (already built) model instead of a fresh one — the pruner passes
    its thinned, rewound copy. ``config.init`` names a saved model to start from instead
    (fine-tuning; the annotation campaigns retrain the deployed model on their exported set).
    Splits may be passed in to avoid reading the shards again.
    """
    from tqdm import tqdm

    from ml.model import network
    from ml.model.backend import keras as get_keras

    run_started = time.perf_counter()
    keras = get_keras()
    if model is None and config.init is not None and config.working is None:
        # Fine-tuning keeps the starting model's working size (the annotation loop fine-tunes
        # the deployed model without naming one): its weights were learnt on that grid.
        config = replace(config, working=network.working_size(network.load(config.init)))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    data_dir = Path(config.data)
    train_split = train_split or load_split(
        data_dir, "train", config.limit, config.working, config.workers
    )
    val_split = val_split or load_split(
        data_dir, "val", config.limit, config.working, config.workers
    )
    if train_split.working != config.working or val_split.working != config.working:
        raise ValueError("the splits passed in were loaded at another working size")
    if not len(train_split) or not len(val_split):
        raise ValueError(f"{data_dir} has no train or no val slices")
    weights = class_weights(train_split)
    keras.utils.set_random_seed(config.seed)

    history = _read_history(out / "history.csv")
    start_epoch = len(history)
    if start_epoch and (out / "last.keras").exists():
        model = keras.saving.load_model(str(out / "last.keras"))
    else:
        history, start_epoch = [], 0
        if model is None and config.init is not None:
            # Shipped models serve tuned mask modes; training needs the plain per-pixel masks.
            # Nor the suitability calibration fitted for serving.
            model = network.with_calibration(
                network.with_mask_modes(network.load(config.init), None), None
            )
            if config.reset_masks:
                network.reset_mask_channels(model, list(config.reset_masks), config.seed)
        elif model is None:
            model = network.build_model(
                network.default_widths(config.base, config.depth), config.depth
            )
        model = network.with_working_size(model, config.working)
        network.compile_model(model, weights, config.learning_rate)
    sampling = slice_weights(train_split) if config.balance else None
    val = _val_batches(val_split, config)
    best = max((_merit(h) for h in history), default=(-np.inf, -np.inf))
    groups = shape_groups(train_split) if config.working else {}
    epoch, ceiling = start_epoch, config.epochs
    while epoch < config.epochs:
        rng = np.random.default_rng([config.seed, epoch])
        # Cosine decay over the run, so a resumed run follows the same schedule.
        lr = 0.5 * config.learning_rate * (1 + np.cos(np.pi * epoch / max(config.epochs, 1)))
        model.optimizer.learning_rate.assign(float(lr))
        started = time.perf_counter()
        losses, step_seconds = [], []
        batches = _training_batches(config, train_split, groups, sampling, rng)
        bar = tqdm(batches, total=config.steps_per_epoch, disable=not progress,
                   desc=f"epoch {epoch + 1}")  # fmt: skip
        for x, y in bar:
            step_started = time.perf_counter()
            result = model.train_on_batch(x, y, return_dict=True)
            losses.append(float(result["loss"]))  # float(): waits for the step (JAX is async)
            step_seconds.append(time.perf_counter() - step_started)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        val_loss = float(
            np.mean([model.test_on_batch(x, y, return_dict=True)["loss"] for x, y in val])
        )
        row = {
            "epoch": float(epoch + 1),
            "loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_iou": tuned_batch_iou(model, val),
            "lr": float(lr),
            "seconds": time.perf_counter() - started,
            # The median step: the network's own pace, without compilation or waits for data.
            "step_seconds": float(np.median(step_seconds)) if step_seconds else 0.0,
        }
        history.append(row)
        model.save(out / "last.keras")
        if epoch + 1 == config.rewind_epoch:
            # The network's weights alone, through an uncompiled view of the same layers: the
            # compiled model's file would carry Adam's two moments as well (3x the size; a base-16
            # model's then missed the 16 MiB a file that a lent GPU box sends back).
            keras.Model(model.inputs, model.outputs).save_weights(out / "rewind.weights.h5")
        if _merit(row) > best:
            best = _merit(row)
            model.save(out / "best.keras")
        with (out / "history.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerows(history)
        write_curve(history, out / "curve.png")
        if progress:
            print(f"epoch {epoch + 1}: loss {row['loss']:.4f} val {val_loss:.4f} "
                  f"val IoU {row['val_iou']:.4f}", flush=True)  # fmt: skip
        epoch += 1
        if config.time_budget is not None:
            pace = _epoch_pace(row["seconds"], step_seconds, first=epoch == start_epoch + 1)
            config = _fit_to_budget(config, ceiling, epoch, run_started, pace, out)
    return out / "best.keras"
