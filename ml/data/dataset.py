"""Build the simulated training / validation / test set.

Each example is one 2-D slice: a real packaged brain source (:mod:`ml.data.sources`) cut in some
orientation (:mod:`ml.data.slices`), given a contrast from a drawn protocol
(:mod:`ml.data.contrast`), laid on a scanner grid (128² … 512², 384 x 512), given a Rician noise
floor, then passed through zero to three artifact simulators of :mod:`ml.simulate`.

Layout on disk (``OUT``)::

    manifest.json                       the recipe, the split, the shard list
    train/384x512-0000.npz  ...         shards, one matrix shape per shard
    val/...  test/...

Shards keep the acquisition matrix (grouped by shape) rather than padding to one training size:
the matrix is part of what the model must handle, and a training loader can crop or pad cheaply.
Keys of each shard (N slices of shape H x W):

- ``images`` float32 [N, H, W]: artifacted magnitude (clean slices as they are), head p99 ≈ 1;
- ``masks`` uint8 [N, 10, H, W]: per type of :data:`ml.ARTIFACT_TYPES`, 0/1 (MISSION.md rule,
  each artifact's mask taken against the image just before it was applied);
- ``nondiagnostic_types`` bool [N, 10]; ``nondiagnostic`` bool [N] (final vs clean, or any type);
- ``severity`` float32 [N, 10] (0 where the type was not applied);
- ``field_strength_t``, ``pixel_bandwidth_hz``, ``te_ms``, ``tr_ms``, ``ti_ms`` (NaN when none),
  ``flip_deg`` (NaN when none) float32 [N]; ``phase_encode`` str [N] ("ROW"/"COL");
  ``pixel_spacing_mm`` float32 [N, 2] (row, column);
- ``sequence``, ``source``, ``orientation`` str [N]; ``slice_index`` int32 [N].

Whole source volumes are held out: :data:`SPLIT_SOURCES` assigns every source to one split.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml import ARTIFACT_TYPES
from ml.data import contrast, slices, variation
from ml.data.sources import SourceMissing, SourceVolume, load_source

SPLIT_SOURCES: dict[str, tuple[str, ...]] = {
    "train": ("icbm152_2009a", "spm_tpm", "nimare_mni152"),
    "val": ("pydeface_head",),
    "test": ("spm_avg152", "odin_brain"),
}
"""Which whole source volumes go to which split (no source appears in two splits)."""

SPLIT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
CLEAN_FRACTION = 0.25
"""At least this share of each split's slices gets no artifact."""
ARTIFACT_COUNT_WEIGHTS: dict[int, float] = {1: 0.7, 2: 0.22, 3: 0.08}
SEVERITY_RANGE: tuple[float, float] = (0.15, 1.0)
SOURCE_WEIGHTS: dict[str, float] = {"odin_brain": 0.5}
"""Relative chance of a source within its split (1 unless listed): odin is a single slice."""
SHARD_SLICES = 32
STYLES: tuple[str, ...] = ("artiscan", "torchio")
"""Artifact generators: ``artiscan`` (:mod:`ml.simulate`, what the model learns from) or
``torchio`` (:mod:`ml.simulate.torchio_style`, five types made another way: a test of how far
the model generalises beyond its own simulators)."""
Job = tuple[int, str, int, str, tuple[str, ...], str, tuple[float, float] | None]
"""(seed, split, index, source, artifact types, style, noise floor): one slice to build; the
noise floor is ``dataset --noise-floor``'s range, or None for the split's own
(:func:`ml.data.slices.draw_noise_sigma`)."""
VARIED_SPLITS: tuple[str, ...] = ("train",)
"""Splits whose clean slices get :mod:`ml.data.variation`'s head variations; validation and
test are built as before, so their slices stay the same across rounds."""
SECOND_GENERATOR_CHANCE = 0.3
"""In the varied (training) splits, the chance that an artifact of a type the TorchIO-style
generator also makes (:data:`ml.simulate.torchio_style.TYPES`) is made by it instead of by
:mod:`ml.simulate`: two implementations of one artifact teach the artifact rather than one
simulator's handwriting (the product is judged on artifacts other code made). Validation and
test slices draw nothing for it, so they stay what they were."""

_WEIGHTED_SEQUENCES: dict[str, tuple[contrast.Sequence, ...]] = {
    "T1": ("T1_SE", "T1_GRE"),
    "T2": ("T2_TSE",),
    "PD": ("PD_TSE",),
}


@dataclass(frozen=True)
class Example:
    """One built slice; arrays as in the module docstring, for a single slice."""

    image: NDArray[np.float32]
    masks: NDArray[np.uint8]
    nondiagnostic_types: NDArray[np.bool_]
    nondiagnostic: bool
    severity: NDArray[np.float32]
    protocol: contrast.Protocol
    phase_encode: str
    geometry: slices.Geometry
    source: str


def presence_map(volume: SourceVolume) -> NDArray[np.float32]:
    """float32 (X, Y, Z): 1 where the head is (used to keep slice positions on the head)."""
    maps = volume.maps
    if volume.kind == "tissue":
        return np.asarray(1.0 - maps["air"], dtype=np.float32)
    if volume.kind == "relaxometry":
        return np.asarray(maps["pd"] > 0.05, dtype=np.float32)
    first = next(iter(maps.values()))
    return np.asarray(first > 0.1, dtype=np.float32)


def _seed(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([seed, list(SPLIT_SOURCES).index(split), index])
    )


def _render(
    volume: SourceVolume,
    geometry: slices.Geometry,
    rng: np.random.Generator,
    sequence: contrast.Sequence | None,
    field_strength_t: float | None,
    vary: bool = False,
) -> tuple[NDArray[np.float32], dict[str, NDArray[np.float32]], contrast.Protocol]:
    planes, src_mm = slices.cut(volume.maps, volume.voxel_mm, geometry.orientation, geometry.index)
    grid = {name: slices.resample(p, src_mm, geometry) for name, p in planes.items()}
    shell_px = max(1, round(8.0 / geometry.pixel_spacing_mm[1]))
    if volume.kind == "tissue":
        protocol = contrast.sample_protocol(
            rng, sequence=sequence, field_strength_t=field_strength_t
        )
        fat = contrast.fat_from_tissue(grid, rng)
        image = contrast.synthesize_tissue(grid, fat, protocol)
        image, rim, gap = _vary(
            image, rng, geometry, vary, stripped=not np.any(grid.get("soft", 0))
        )
        air = grid["air"] * (contrast.head_mask(image) if image.any() else 0)
        bone = grid["bone"]
    elif volume.kind == "relaxometry":
        protocol = contrast.sample_protocol(
            rng, sequence=sequence, field_strength_t=field_strength_t
        )
        image = contrast.synthesize_relaxometry(grid, protocol)
        image, rim, gap = _vary(image, rng, geometry, vary, stripped=False)
        t1 = grid["t1_ms"]
        fat = np.asarray((t1 > 100) & (t1 < 450), dtype=np.float32) * np.clip(grid["pd"] * 2, 0, 1)
        head = contrast.head_mask(image) if image.any() else np.zeros(image.shape, bool)
        air = contrast.voids_from_image(image, head, max_depth_px=3 * shell_px)
        bone = np.zeros_like(image)
    else:
        weighting = sorted(volume.maps)[int(rng.integers(len(volume.maps)))]
        choices = _WEIGHTED_SEQUENCES[weighting]
        protocol = contrast.sample_protocol(
            rng,
            sequence=choices[int(rng.integers(len(choices)))],
            field_strength_t=field_strength_t,
        )
        image, rim, gap = _vary(grid[weighting], rng, geometry, vary, stripped=False)
        head = contrast.head_mask(image) if image.any() else np.zeros(image.shape, bool)
        fat = contrast.fat_from_image(image, head, shell_px=shell_px)
        air = contrast.voids_from_image(image, head, max_depth_px=3 * shell_px)
        bone = np.zeros_like(image)
    if rim is not None and gap is not None:
        fat = np.maximum(fat, rim * float(rng.uniform(0.3, 0.9)))
        air = air * np.clip(1 - rim - gap, 0, 1)
        bone = np.maximum(bone, gap)
    maps = {
        "fat": np.asarray(fat, np.float32),
        "air": np.asarray(air, np.float32),
        "bone": np.asarray(bone, np.float32),
        "susceptibility": contrast.susceptibility_map(
            np.asarray(air, np.float32), np.asarray(bone, np.float32)
        ),
    }
    return np.asarray(image, np.float32), maps, protocol


def _vary(
    image: NDArray[np.floating[Any]],
    rng: np.random.Generator,
    geometry: slices.Geometry,
    vary: bool,
    *,
    stripped: bool,
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None, NDArray[np.float32] | None]:
    """The clean image with :mod:`ml.data.variation`'s texture and scalp when ``vary`` (drawn by
    their chances; nothing is drawn from ``rng`` otherwise), and the added rim and gap (None
    when no scalp was added)."""
    img = np.asarray(image, np.float32)
    if not vary or not img.any():
        return img, None, None
    head = contrast.head_mask(img)
    if rng.random() < variation.TEXTURE_CHANCE:
        img = variation.add_texture(img, head, rng)
    chance = variation.SCALP_CHANCE_STRIPPED if stripped else variation.SCALP_CHANCE
    if rng.random() >= chance:
        return img, None, None
    scalp = variation.add_scalp(img, head, rng, float(geometry.pixel_spacing_mm[1]))
    return scalp.image, scalp.rim, scalp.gap


def clean_slice(
    volume: SourceVolume,
    geometry: slices.Geometry,
    rng: np.random.Generator,
    *,
    sequence: contrast.Sequence | None = None,
    field_strength_t: float | None = None,
    vary: bool = False,
    noise_floor: tuple[float, float] | None = None,
) -> tuple[NDArray[np.float32], dict[str, NDArray[np.float32]], contrast.Protocol] | None:
    """A clean slice on the geometry's grid: image, simulator maps, protocol; None if no head.

    ``sequence`` and ``field_strength_t`` fix the protocol's (drawn when None); a fixed-contrast
    source keeps its own weighting whatever ``sequence`` says. ``vary`` draws
    :mod:`ml.data.variation`'s texture and scalp and a wider noise floor (training slices);
    ``noise_floor`` overrides the floor's range (:func:`ml.data.slices.draw_noise_sigma`).

    The image (float32 (rows, columns)) is scaled so the head's p99 is 1, then gets a Rician
    noise floor. Maps (same shape): ``fat``, ``air``, ``bone`` (fractions), ``susceptibility``
    (ppm relative to tissue), ``head`` (0/1). None when the head covers under 1 % of the grid.
    """
    image, maps, protocol = _render(volume, geometry, rng, sequence, field_strength_t, vary)
    if not image.any():
        return None
    head = contrast.head_mask(image)
    if head.sum() < 0.01 * image.size:
        return None
    image = image / float(np.percentile(image[head], 99))
    sigma = slices.draw_noise_sigma(rng, varied=vary, override=noise_floor)
    clean = slices.add_noise_floor(image, sigma, rng)
    maps["head"] = head.astype(np.float32)
    return clean, maps, protocol


def make_example(
    volume: SourceVolume,
    presence: NDArray[np.float32],
    rng: np.random.Generator,
    artifacts: tuple[str, ...],
    *,
    vary: bool = False,
    style: str = "artiscan",
    noise_floor: tuple[float, float] | None = None,
) -> Example:
    """Build one slice from ``volume`` with the given artifact types (empty: a clean slice).

    Slices whose head covers under 1 % of the grid (cut beyond the head after rotation/shift)
    are redrawn, up to 50 times.
    """
    from ml.simulate import AcquisitionHeader, ground_truth, simulate

    for _ in range(50):
        geometry = slices.sample_geometry(rng, volume, presence)
        result = clean_slice(volume, geometry, rng, vary=vary, noise_floor=noise_floor)
        if result is not None:
            break
    else:
        raise RuntimeError(f"could not cut a slice with a head from {volume.name}")
    clean, maps, protocol = result
    phase_encode = "ROW" if rng.random() < 0.5 else "COL"
    header = AcquisitionHeader(
        rows=geometry.matrix[0],
        columns=geometry.matrix[1],
        phase_encode=phase_encode,  # type: ignore[arg-type]
        pixel_bandwidth_hz=protocol.pixel_bandwidth_hz,
        field_strength_t=protocol.field_strength_t,
        pixel_spacing_mm=geometry.pixel_spacing_mm,
        te_ms=protocol.te_ms,
        tr_ms=protocol.tr_ms,
        ti_ms=protocol.ti_ms,
    )
    n_types = len(ARTIFACT_TYPES)
    masks = np.zeros((n_types, *clean.shape), dtype=np.uint8)
    nondiag_types = np.zeros(n_types, dtype=bool)
    severity = np.zeros(n_types, dtype=np.float32)
    current = clean
    for name in artifacts:
        k = ARTIFACT_TYPES.index(name)
        severity[k] = round(float(rng.uniform(*SEVERITY_RANGE)), 3)
        step_seed = int(rng.integers(2**31 - 1))
        if style == "torchio" or _second_generator(name, rng, vary=vary, style=style):
            from ml.simulate import torchio_style

            made = torchio_style.apply(current, name, float(severity[k]), header, step_seed)
        else:
            made = simulate(current, name, float(severity[k]), header, step_seed, maps=maps)
        after = np.asarray(made, np.float32)
        # This type's own change (the step from the image before it), against the clean
        # slice's head and level (MISSION.md's C), not the half-finished image's.
        mask, nondiag = ground_truth(current, after, reference=clean)
        masks[k] = np.asarray(mask, np.uint8)
        nondiag_types[k] = bool(nondiag)
        current = after
    # The slice's label is the convention's own: the final image against the clean one (a type
    # that alone would be non-diagnostic is, bar artifacts that cancel, so there too).
    overall = bool(ground_truth(clean, current)[1]) if artifacts else False
    return Example(
        image=np.asarray(current, np.float32),
        masks=masks,
        nondiagnostic_types=nondiag_types,
        nondiagnostic=overall,
        severity=severity,
        protocol=protocol,
        phase_encode=phase_encode,
        geometry=geometry,
        source=volume.name,
    )


def _second_generator(name: str, rng: np.random.Generator, *, vary: bool, style: str) -> bool:
    """Whether a training slice's artifact ``name`` is made by the TorchIO-style generator
    (:data:`SECOND_GENERATOR_CHANCE`); draws from ``rng`` only for a varied slice of the
    default style and a type that generator makes."""
    if not vary or style != "artiscan":
        return False
    from ml.simulate.torchio_style import TYPES

    return name in TYPES and bool(rng.random() < SECOND_GENERATOR_CHANCE)


def plan_artifacts(
    rng: np.random.Generator, count: int, types: tuple[str, ...] = ARTIFACT_TYPES
) -> list[tuple[str, ...]]:
    """Artifact types per slice for ``count`` slices: ⌈25 %⌉ clean, others 1-3 distinct
    ``types`` (canonical order)."""
    n_clean = math.ceil(CLEAN_FRACTION * count)
    clean_at = set(rng.permutation(count)[:n_clean].tolist())
    sizes = list(ARTIFACT_COUNT_WEIGHTS)
    weights = np.array([ARTIFACT_COUNT_WEIGHTS[s] for s in sizes])
    plan: list[tuple[str, ...]] = []
    for i in range(count):
        if i in clean_at:
            plan.append(())
            continue
        n = sizes[int(rng.choice(len(sizes), p=weights / weights.sum()))]
        chosen = rng.choice(len(types), size=min(n, len(types)), replace=False)
        plan.append(tuple(types[int(j)] for j in sorted(chosen)))
    return plan


# Filled in the parent before the worker pool forks, so workers share the loaded volumes (or, in
# spawned workers, by ``_load_for_worker``).
_VOLUMES: dict[str, tuple[SourceVolume, NDArray[np.float32]]] = {}


def _load_for_worker(names: list[str]) -> None:
    volumes, _ = load_volumes(names)
    for name, volume in volumes.items():
        _VOLUMES[name] = (volume, presence_map(volume))


def _threads_alive() -> int:
    """Threads of this process, native ones included (TensorFlow, ONNX Runtime and BLAS pools
    do not show in ``threading``)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def _build_one(job: Job) -> Example:
    seed, split, index, source, artifacts, style, noise_floor = job
    rng = _seed(seed, split, index)
    volume, presence = _VOLUMES[source]
    return make_example(
        volume,
        presence,
        rng,
        artifacts,
        vary=split in VARIED_SPLITS,
        style=style,
        noise_floor=noise_floor,
    )


def split_counts(total: int) -> dict[str, int]:
    """Slices per split for ``total`` slices (each split ≥ 1 when total ≥ 3)."""
    counts = {s: max(1, round(f * total)) if total >= 3 else 0 for s, f in SPLIT_FRACTIONS.items()}
    counts["train"] = max(total - counts["val"] - counts["test"], 0)
    return counts


def _jobs(
    seed: int,
    split: str,
    count: int,
    sources: list[str],
    style: str = "artiscan",
    noise_floor: tuple[float, float] | None = None,
) -> list[Job]:
    """The slices of a split. Slice ``i`` has the same source and the same clean image in
    either style (its own generator draws the clean slice before the artifacts); a TorchIO-style
    plan is drawn from a generator of its own, so the sources picked stay the same."""
    split_index = list(SPLIT_SOURCES).index(split)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 99, split_index]))
    plan = plan_artifacts(rng, count)
    weights = np.array([SOURCE_WEIGHTS.get(s, 1.0) for s in sources])
    picks = rng.choice(len(sources), size=count, p=weights / weights.sum())
    if style == "torchio":
        from ml.simulate import torchio_style

        other = np.random.default_rng(np.random.SeedSequence([seed, 98, split_index]))
        plan = plan_artifacts(other, count, torchio_style.TYPES)
    elif style != "artiscan":
        raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    return [
        (seed, split, i, sources[int(picks[i])], plan[i], style, noise_floor) for i in range(count)
    ]


def _save_npz(path: Path, arrays: Mapping[str, NDArray[Any]]) -> None:
    """``np.savez_compressed`` with fixed zip timestamps, so equal arrays give equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue(), compresslevel=1)


def _shard_arrays(examples: list[Example]) -> dict[str, NDArray[Any]]:
    def f32(values: list[float | None]) -> NDArray[np.float32]:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float32)

    return {
        "images": np.stack([e.image for e in examples]),
        "masks": np.stack([e.masks for e in examples]),
        "nondiagnostic_types": np.stack([e.nondiagnostic_types for e in examples]),
        "nondiagnostic": np.array([e.nondiagnostic for e in examples], dtype=bool),
        "severity": np.stack([e.severity for e in examples]),
        "field_strength_t": f32([e.protocol.field_strength_t for e in examples]),
        "pixel_bandwidth_hz": f32([e.protocol.pixel_bandwidth_hz for e in examples]),
        "te_ms": f32([e.protocol.te_ms for e in examples]),
        "tr_ms": f32([e.protocol.tr_ms for e in examples]),
        "ti_ms": f32([e.protocol.ti_ms for e in examples]),
        "flip_deg": f32([e.protocol.flip_deg for e in examples]),
        "phase_encode": np.array([e.phase_encode for e in examples]),
        "pixel_spacing_mm": np.array([e.geometry.pixel_spacing_mm for e in examples], np.float32),
        "sequence": np.array([e.protocol.sequence for e in examples]),
        "source": np.array([e.source for e in examples]),
        "orientation": np.array([e.geometry.orientation for e in examples]),
        "slice_index": np.array([e.geometry.index for e in examples], dtype=np.int32),
    }


def load_volumes(names: list[str]) -> tuple[dict[str, SourceVolume], dict[str, str]]:
    """Load the named sources; returns (loaded, missing name → install message)."""
    loaded: dict[str, SourceVolume] = {}
    missing: dict[str, str] = {}
    for name in names:
        try:
            loaded[name] = load_source(name)
        except SourceMissing as exc:
            missing[name] = str(exc)
    return loaded, missing


def build_dataset(
    out: Path,
    *,
    slices_total: int,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    splits: tuple[str, ...] | None = None,
    style: str = "artiscan",
    noise_floor: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Build ``slices_total`` slices into ``out`` (see the module docstring); returns the manifest.

    Deterministic for a seed whatever ``workers`` is: every slice draws from its own generator
    seeded by (seed, split, index), and shards are written in index order. ``splits``: build only
    these (the others get no slice and their sources are not loaded); a split's slices are the
    same ones a build of every split makes. ``style``: the artifact generator (:data:`STYLES`);
    ``torchio`` slices have the same clean images as the ``artiscan`` ones of the same seed.
    ``noise_floor``: the clean slices' noise-floor sigma drawn uniformly from this range in
    every split (a robustness set), instead of each split's own; the slices are otherwise the
    same.
    """
    from tqdm import tqdm

    from ml.simulate import torchio_style

    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")

    unknown = sorted(set(splits or ()) - set(SPLIT_SOURCES))
    if unknown:
        known = ", ".join(SPLIT_SOURCES)
        raise ValueError(f"unknown split(s) {', '.join(unknown)}; known: {known}")
    out.mkdir(parents=True, exist_ok=True)
    wanted = tuple(SPLIT_SOURCES) if splits is None else splits
    names = [n for split in wanted for n in SPLIT_SOURCES[split]]
    volumes, missing = load_volumes(names)
    counts = {s: n if s in wanted else 0 for s, n in split_counts(slices_total).items()}
    _VOLUMES.clear()
    for name, volume in volumes.items():
        _VOLUMES[name] = (volume, presence_map(volume))
    jobs: list[Job] = []
    for split, count in counts.items():
        present = [n for n in SPLIT_SOURCES[split] if n in volumes]
        if count and not present:
            raise SourceMissing(
                f"no source of the {split} split is installed: " + "; ".join(missing.values())
            )
        jobs += _jobs(seed, split, count, present, style, noise_floor) if count else []

    shards: list[dict[str, Any]] = []
    buffers: dict[tuple[str, tuple[int, int]], list[Example]] = {}
    shard_number: dict[tuple[str, tuple[int, int]], int] = {}
    stats = {s: {"slices": 0, "clean": 0, "nondiagnostic": 0} for s in SPLIT_SOURCES}

    # Shards are deflated on threads (zlib leaves the GIL): on one thread the compression of
    # ~2.5 MB a slice bounded a 15-worker build on a GPU box to 42 slices/s.
    writer = ThreadPoolExecutor(max_workers=max(1, workers))
    written: list[Future[None]] = []

    def flush(key: tuple[str, tuple[int, int]]) -> None:
        split, (rows, cols) = key
        number = shard_number.get(key, 0)
        shard_number[key] = number + 1
        rel = f"{split}/{rows}x{cols}-{number:04d}.npz"
        written.append(writer.submit(_save_npz, out / rel, _shard_arrays(buffers[key])))
        for finished in [f for f in written if f.done()]:
            finished.result()  # a failed write raises now
            written.remove(finished)
        shards.append(
            {"path": rel, "split": split, "shape": [rows, cols], "slices": len(buffers[key])}
        )
        buffers[key] = []

    def results() -> Iterator[tuple[Job, Example]]:
        if workers <= 1:
            for job in jobs:
                yield job, _build_one(job)
            return
        import multiprocessing

        # Forking shares the loaded volumes for free but is only safe in a single-threaded
        # process: a fork taken while another thread holds a lock (a BLAS or TensorFlow pool,
        # e.g. in a long-lived process that already ran a model) deadlocks the child. Then the
        # workers are spawned and load the volumes themselves.
        if _threads_alive() == 1:
            pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("fork")
            )
        else:
            pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_load_for_worker,
                initargs=(sorted(volumes),),
            )
        with pool:
            yield from zip(jobs, pool.map(_build_one, jobs, chunksize=4), strict=True)

    for job, example in tqdm(results(), total=len(jobs), disable=not progress, unit="slice"):
        split = job[1]
        key = (split, example.geometry.matrix)
        buffers.setdefault(key, []).append(example)
        stats[split]["slices"] += 1
        stats[split]["clean"] += int(not job[4])
        stats[split]["nondiagnostic"] += int(example.nondiagnostic)
        if len(buffers[key]) >= SHARD_SLICES:
            flush(key)
    for key in sorted(buffers):
        if buffers[key]:
            flush(key)
    with writer:
        for future in written:
            future.result()  # a failed write raises here
    shards.sort(key=lambda s: s["path"])

    manifest: dict[str, Any] = {
        "format": "artiscan-simulated-slices/1",
        "command": f"python -m ml dataset --out DIR --slices {slices_total} --seed {seed}"
        + ("" if splits is None else " --splits " + " ".join(wanted))
        + ("" if style == "artiscan" else f" --style {style}"),
        "style": style,
        "seed": seed,
        "slices": slices_total,
        "artifact_types": list(ARTIFACT_TYPES),
        "splits": {
            split: {
                "sources": [n for n in SPLIT_SOURCES[split] if n in volumes],
                "subjects": sorted(
                    {volumes[n].subject for n in SPLIT_SOURCES[split] if n in volumes}
                ),
                **stats[split],
            }
            for split in SPLIT_SOURCES
        },
        "sources": {
            name: {
                "split": next(s for s, ns in SPLIT_SOURCES.items() if name in ns),
                "subject": v.subject,
                "kind": v.kind,
                "maps": sorted(v.maps),
                "shape": list(v.shape),
                "voxel_mm": list(v.voxel_mm),
                "citation": v.citation,
            }
            for name, v in volumes.items()
        },
        "missing_sources": missing,
        "recipe": {
            "clean_fraction_min": CLEAN_FRACTION,
            "artifact_count_weights": {str(k): v for k, v in ARTIFACT_COUNT_WEIGHTS.items()},
            "severity_range": list(SEVERITY_RANGE),
            "source_weights": SOURCE_WEIGHTS,
            "protocol_ranges": {
                seq: {k: None if r is None else list(r) for k, r in ranges.items()}
                for seq, ranges in contrast.PROTOCOL_RANGES.items()
            },
            "tissue_parameters_t1_t2_t2s_pd": {
                str(b0): {t: list(v) for t, v in table.items()}
                for b0, table in contrast.TISSUE_PARAMETERS.items()
            },
            "matrices": [list(m) for m in slices.MATRICES],
            "fov_columns_mm": list(slices.FOV_COLUMNS_MM),
            "orientation_weights": slices.ORIENTATION_WEIGHTS,
            "noise_floor_sigma": list(noise_floor or slices.NOISE_FLOOR),
            "noise_floor_sigma_train": (
                list(noise_floor) if noise_floor else list(slices.TRAIN_NOISE_FLOOR)
            ),
            "phase_encode": {"ROW": 0.5, "COL": 0.5},
            "head_variation": {**variation.recipe(), "splits": list(VARIED_SPLITS)},
            "second_generator": {
                "chance": SECOND_GENERATOR_CHANCE,
                "types": list(torchio_style.TYPES),
                "splits": list(VARIED_SPLITS),
            },
        },
        "shards": shards,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
