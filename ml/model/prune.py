"""Structured channel pruning in Keras 3: energy-aware ordering + lottery-ticket rewinding.

tensorflow-model-optimization (0.8.x) does not accept Keras 3 models — it needs the legacy
tf-keras — so pruning here is our own code: channels are ranked, removed from the layer widths,
and the surviving weights are *copied into a thinner model*, so the result really computes less
(not a masked model of the same size).

**Ordering (energy-aware, after Yang, Chen and Sze, CVPR 2017).** Each output channel of each
3x3 convolution gets an estimated inference energy at a 384 x 512 slice, with the normalised
costs of Eyeriss (the paper's hardware model): 1 per MAC, 6 per activation read or written at the
global buffer, 200 per weight read from DRAM. A channel's energy counts its own MACs
(H·W·9·C_in), the MACs it feeds in its consumer layers (H'·W'·9·C_out'), its activation
traffic (write once, read by each consumer) and its weights. Its importance is the magnitude of
its batch-norm scale times the L2 norm of its filter, divided by the layer's mean (so layers are
comparable). Channels are removed greedily in increasing order of importance per energy, i.e.
where the most energy is saved per unit of accuracy lost, until the parameter count reaches the
round's target; every layer keeps at least :data:`MIN_CHANNELS` channels and, optionally,
``min_fraction`` of the full model's (without that floor the energy ordering strips the
full-resolution layers first: they cost the most energy per channel).

**Rewinding (Frankle and Carbin, ICLR 2019 "lottery ticket", with the rewinding of Frankle et
al. 2019).** After each round the surviving channels take their weights from an *early*
checkpoint of the full run (``rewind.weights.h5``, saved after the rewind epoch), not from the
trained model, and the thinner network is retrained. Rounds go geometrically to the target
(``target^(r/rounds)`` of the parameters), ranking each time on the model retrained in the round
before, whose channel indices are mapped back to the full model's.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.model import network
from ml.model.preprocess import HEADER_FEATURES

MIN_CHANNELS = 2
REFERENCE_SHAPE = (384, 512)
E_MAC, E_BUFFER, E_DRAM = 1.0, 6.0, 200.0

Kept = dict[str, NDArray[np.int64]]


def _level(name: str) -> int:
    if name.startswith("bott"):
        return -1
    return int(name[2:] if name.startswith("up") else name[3:-1])


def _pixels(name: str, depth: int) -> float:
    level = depth if name.startswith("bott") else _level(name)
    return REFERENCE_SHAPE[0] * REFERENCE_SHAPE[1] / 4.0**level


def _consumers(name: str, depth: int) -> list[str]:
    return [c for c in network.conv_names(depth) if name in network.conv_inputs(c, depth)]


def _in_channels(name: str, widths: dict[str, int], depth: int) -> int:
    return sum(1 if s == "image" else widths[s] for s in network.conv_inputs(name, depth))


def parameter_count(widths: dict[str, int], depth: int) -> int:
    """Parameters of ``network.build_model(widths, depth)``, computed without building it."""
    n_types, n_header = network.N_TYPES, len(HEADER_FEATURES)
    total = n_header * network.HEADER_HIDDEN + network.HEADER_HIDDEN
    for name in network.conv_names(depth):
        total += 9 * _in_channels(name, widths, depth) * widths[name] + 4 * widths[name]
    for name in network.film_targets(depth):
        total += (network.HEADER_HIDDEN + 1) * 2 * widths[name]
    total += widths["dec0b"] * n_types + n_types
    pooled = widths["bottb"] + 2 * n_types
    total += (pooled + 1) * (n_types + 1)
    return total


def channel_energy(widths: dict[str, int], depth: int) -> dict[str, float]:
    """Estimated energy (Eyeriss-normalised units) that one output channel of each conv costs."""
    energy: dict[str, float] = {}
    for name in network.conv_names(depth):
        hw = _pixels(name, depth)
        consumers = _consumers(name, depth)
        macs = hw * 9 * _in_channels(name, widths, depth)
        macs += sum(_pixels(c, depth) * 9 * widths[c] for c in consumers)
        traffic = hw * (1 + max(len(consumers), 1))
        weights = 9 * _in_channels(name, widths, depth)
        energy[name] = E_MAC * macs + E_BUFFER * traffic + E_DRAM * weights
    return energy


def channel_importance(model: Any) -> dict[str, NDArray[np.float64]]:
    """Per conv: |batch-norm γ| · ‖filter‖₂ per output channel, divided by the layer's mean."""
    depth = network.model_depth(model)
    out: dict[str, NDArray[np.float64]] = {}
    for name in network.conv_names(depth):
        kernel = np.asarray(model.get_layer(name).get_weights()[0], np.float64)
        gamma = np.asarray(model.get_layer(f"{name}_bn").get_weights()[0], np.float64)
        score = np.abs(gamma) * np.sqrt((kernel**2).sum(axis=(0, 1, 2)))
        out[name] = score / max(float(score.mean()), 1e-12)
    return out


def select_channels(model: Any, target_params: int, floors: dict[str, int] | None = None) -> Kept:
    """Which channels of ``model`` (local indices, sorted) to keep to reach ``target_params``.

    ``floors``: the fewest channels each conv may keep (default :data:`MIN_CHANNELS`).
    """
    depth = network.model_depth(model)
    widths = network.model_widths(model)
    importance = channel_importance(model)
    energy = channel_energy(widths, depth)
    candidates = sorted(
        (float(importance[name][c]) / energy[name], name, c)
        for name in widths
        for c in range(widths[name])
    )
    removed: dict[str, set[int]] = {name: set() for name in widths}
    current = dict(widths)
    for _, name, c in candidates:
        if parameter_count(current, depth) <= target_params:
            break
        if current[name] <= max(MIN_CHANNELS, (floors or {}).get(name, 0)):
            continue
        removed[name].add(c)
        current[name] -= 1
    return {
        name: np.array([c for c in range(widths[name]) if c not in removed[name]], np.int64)
        for name in widths
    }


def _input_index(name: str, kept: Kept, src_widths: dict[str, int], depth: int) -> NDArray[Any]:
    parts, offset = [], 0
    for source in network.conv_inputs(name, depth):
        if source == "image":
            parts.append(np.array([offset]))
            offset += 1
        else:
            parts.append(kept[source] + offset)
            offset += src_widths[source]
    return np.concatenate(parts)


def thin_copy(source: Any, kept: Kept) -> Any:
    """A new model with ``len(kept[name])`` channels per conv, weights copied from ``source``.

    ``kept[name]`` are indices into ``source``'s channels of conv ``name``. Batch-norm
    statistics, FiLM rows and the head's input rows follow the kept channels.
    """
    depth = network.model_depth(source)
    src_widths = network.model_widths(source)
    thin = network.build_model({k: len(v) for k, v in kept.items()}, depth)
    for layer in thin.layers:
        name = layer.name
        weights = source.get_layer(name).get_weights() if layer.weights else []
        if not weights:
            continue
        if name in kept:
            kernel = weights[0][:, :, _input_index(name, kept, src_widths, depth)]
            layer.set_weights([kernel[..., kept[name]]])
        elif name.endswith("_bn") and name[:-3] in kept:
            layer.set_weights([w[kept[name[:-3]]] for w in weights])
        elif name.startswith("film_"):
            target = name[5:]
            idx = np.concatenate([kept[target], kept[target] + src_widths[target]])
            layer.set_weights([weights[0][:, idx], weights[1][idx]])
        elif name == "mask_logits":
            layer.set_weights([weights[0][:, :, kept["dec0b"]], weights[1]])
        elif name in ("presence", "suitability"):
            rows = np.concatenate(
                [kept["bottb"], src_widths["bottb"] + np.arange(2 * network.N_TYPES)]
            )
            layer.set_weights([weights[0][rows], weights[1]])
        else:
            layer.set_weights(weights)
    return thin


def prune_run(
    run_dir: Path,
    *,
    to: float = 0.25,
    rounds: int = 2,
    epochs: int = 6,
    final_epochs: int | None = None,
    steps: int | None = None,
    min_fraction: float = 0.0,
    out: Path | None = None,
    progress: bool = True,
    time_budget: float | None = None,
) -> dict[str, Any]:
    """Prune the run in ``run_dir`` to at most ``to`` of its parameters; returns the report.

    Writes ``out`` (default ``run_dir/pruned``): ``round{r}/`` training runs, ``best.keras`` (the
    final pruned model) and ``prune.json`` (widths, parameter counts, per-round figures).
    ``epochs`` retrains each round; ``final_epochs`` (default ``epochs``) the last one, whose
    network is the one shipped and so deserves the longest retraining (its cosine schedule then
    spans all of them, unlike resuming a finished round with more epochs). ``time_budget``:
    seconds for the whole pruning; each round's retraining gets the share of what is left that
    its epochs are of the remaining rounds' (:attr:`TrainConfig.time_budget` then cuts its epochs).
    """
    started = time.perf_counter()
    from ml.model.backend import keras as get_keras
    from ml.model.data import load_split
    from ml.model.train import TrainConfig, train

    keras = get_keras()
    out = out or run_dir / "pruned"
    out.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(**json.loads((run_dir / "config.json").read_text()))
    full = network.load(run_dir / "best.keras")
    rewind = keras.models.clone_model(full)
    rewind.load_weights(run_dir / "rewind.weights.h5")
    full_params = int(full.count_params())
    kept: Kept = {k: np.arange(v) for k, v in network.model_widths(full).items()}
    floors = {k: int(np.ceil(min_fraction * len(v))) for k, v in kept.items()}
    data_dir = Path(config.data)
    splits = (
        load_split(data_dir, "train", config.limit, config.working, config.workers),
        load_split(data_dir, "val", config.limit, config.working, config.workers),
    )
    current, report_rounds = full, []
    plan = [final_epochs if r == rounds and final_epochs else epochs for r in range(1, rounds + 1)]
    for r in range(1, rounds + 1):
        round_started = time.perf_counter()
        budget = None
        if time_budget is not None:
            left = time_budget - (round_started - started)
            budget = max(left, 0.0) * plan[r - 1] / sum(plan[r - 1 :])
        target = int(full_params * to ** (r / rounds))
        local = select_channels(current, target, floors)
        kept = {name: kept[name][local[name]] for name in kept}
        ticket = thin_copy(rewind, kept)
        round_config = replace(
            config,
            epochs=plan[r - 1],
            steps_per_epoch=steps or config.steps_per_epoch,
            rewind_epoch=0,
            time_budget=budget,
        )
        best = train(
            round_config, out / f"round{r}", model=ticket, progress=progress,
            train_split=splits[0], val_split=splits[1],
        )  # fmt: skip
        current = network.load(best)
        report_rounds.append(
            {
                "round": r,
                "target_params": target,
                "params": int(current.count_params()),
                "fraction": int(current.count_params()) / full_params,
                "epochs": len((out / f"round{r}" / "history.csv").read_text().splitlines()) - 1,
                "seconds": time.perf_counter() - round_started,
            }
        )
    network.save_for_serving(current, out / "best.keras")
    report = {
        "method": "energy-aware channel ordering + lottery-ticket rewinding (ml/model/prune.py)",
        "full_params": full_params,
        "pruned_params": int(current.count_params()),
        "fraction": int(current.count_params()) / full_params,
        "to": to,
        "rounds": report_rounds,
        "widths_full": network.model_widths(full),
        "widths_pruned": network.model_widths(current),
        "rewind": f"rewind.weights.h5 (weights after epoch {config.rewind_epoch})",
        "retrain_epochs_per_round": [r["epochs"] for r in report_rounds],
        "min_fraction_per_layer": min_fraction,
    }
    (out / "prune.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
