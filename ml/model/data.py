"""Load the simulated shards (``ml.data.dataset`` format) into canonical, normalised examples.

Everything here is NumPy. A :class:`Split` holds one split's slices in canonical orientation
(phase-encode along axis 1), normalised, with their header vectors and labels; training draws
random crops from it, evaluation runs whole slices.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ml import ARTIFACT_TYPES
from ml.model.preprocess import canonical, header_vector, normalise, resample, working_shape


@dataclass
class Split:
    """One split's slices; lists of length N, arrays per slice.

    ``images[i]`` float32 ``(H, W)`` canonical and normalised; ``masks[i]`` uint8 ``(K, H, W)``
    canonical; ``headers`` float32 ``(N, 8)``; ``nondiagnostic`` bool ``(N,)``; ``meta`` per-slice
    strings (source, sequence, field, matrix, phase_encode) for the evaluation breakdowns;
    ``present`` bool ``(N, K)``: the slice's ground truth has the type (whole slice).

    With ``working`` (a working size, see :func:`ml.model.preprocess.working_shape`) the images
    and masks are stored on each slice's working grid instead: images area-averaged (linear
    where the slice is smaller), masks as the area fraction of each working pixel that the
    ground truth covers, in 1/255 steps (uint8 0–255). ``present`` always comes from the
    original masks.
    """

    images: list[NDArray[np.float32]] = field(default_factory=list)
    masks: list[NDArray[np.uint8]] = field(default_factory=list)
    headers: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 8), np.float32))
    nondiagnostic: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    meta: list[dict[str, str]] = field(default_factory=list)
    present: NDArray[np.bool_] = field(
        default_factory=lambda: np.zeros((0, len(ARTIFACT_TYPES)), bool)
    )
    working: int | None = None

    def __len__(self) -> int:
        return len(self.images)


def load_split(
    data_dir: Path,
    split: str,
    limit: int | None = None,
    working: int | None = None,
    workers: int = 1,
) -> Split:
    """Read the shards of ``split`` listed in ``data_dir/manifest.json`` (at most ``limit``);
    with ``working``, on the working grid of that size (see :class:`Split`). ``workers`` > 1
    reads and resamples the shards in that many processes (same result, in shard order)."""
    manifest = json.loads((data_dir / "manifest.json").read_text())
    if list(manifest["artifact_types"]) != list(ARTIFACT_TYPES):
        raise ValueError("the data set's artifact types differ from ml.ARTIFACT_TYPES")
    cache = None
    if working is not None:
        # Resampling thousands of slices takes minutes: the working-grid split is kept beside the
        # shards, named by what it was made from (shard list, limit, size), and read back next time.
        key = json.dumps(
            [
                CACHE_VERSION,
                split,
                limit,
                working,
                [s for s in manifest["shards"] if s["split"] == split],
            ],
            sort_keys=True,
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        cache = data_dir / f".working-{working}-{split}-{digest}.npz"
        if cache.is_file():
            return _read_cache(cache, working)
    jobs, remaining = [], limit
    for shard in manifest["shards"]:
        if shard["split"] != split or remaining == 0:
            continue
        take = shard["slices"] if remaining is None else min(int(shard["slices"]), remaining)
        remaining = None if remaining is None else remaining - take
        jobs.append((str(data_dir / shard["path"]), int(take), working))
    out = Split(working=working)
    headers: list[NDArray[np.float32]] = []
    labels: list[bool] = []
    present: list[NDArray[np.bool_]] = []
    for part in _map_shards(jobs, workers):
        out.images += part.images
        out.masks += part.masks
        out.meta += part.meta
        headers.append(part.headers)
        labels += list(part.nondiagnostic)
        present.append(part.present)
    out.headers = np.concatenate(headers) if headers else np.zeros((0, 8), np.float32)
    out.nondiagnostic = np.array(labels, dtype=bool)
    out.present = np.concatenate(present) if present else np.zeros((0, len(ARTIFACT_TYPES)), bool)
    if cache is not None:
        _write_cache(cache, out)
    return out


def _map_shards(jobs: list[tuple[str, int, int | None]], workers: int) -> Iterator[Split]:
    """:func:`_load_shard` over ``jobs`` in order, in ``workers`` processes when > 1."""
    if workers <= 1 or len(jobs) <= 1:
        yield from (_load_shard(*job) for job in jobs)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Spawned, not forked: the caller may already run a Keras backend's thread pools.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(_load_shard, *zip(*jobs, strict=True))


def _load_shard(path: str, take: int, working: int | None) -> Split:
    """The first ``take`` slices of one shard, canonical and normalised (on the working grid
    when ``working`` is set); ``headers``/``nondiagnostic``/``present`` hold this shard's rows."""
    out = Split(working=working)
    headers: list[NDArray[np.float32]] = []
    labels: list[bool] = []
    present: list[NDArray[np.bool_]] = []
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for i in range(min(take, len(arrays["images"]))):
        pe = str(arrays["phase_encode"][i])
        image = normalise(canonical(arrays["images"][i], pe))
        mask = canonical(arrays["masks"][i], pe)
        present.append(np.asarray(mask.reshape(mask.shape[0], -1).any(axis=1)))
        if working is None:
            out.images.append(image.copy())
            out.masks.append(np.ascontiguousarray(mask))
        else:
            grid = working_shape(image.shape[0], image.shape[1], working)
            out.images.append(resample(image, grid))
            fraction = resample(mask.astype(np.float32), grid)
            out.masks.append(np.rint(np.clip(fraction, 0, 1) * 255).astype(np.uint8))
        headers.append(
            header_vector(
                field_strength_t=float(arrays["field_strength_t"][i]),
                pixel_bandwidth_hz=float(arrays["pixel_bandwidth_hz"][i]),
                te_ms=float(arrays["te_ms"][i]),
                tr_ms=float(arrays["tr_ms"][i]),
                ti_ms=float(arrays["ti_ms"][i]),
                pixel_spacing_mm=(
                    float(arrays["pixel_spacing_mm"][i][0]),
                    float(arrays["pixel_spacing_mm"][i][1]),
                ),
                phase_encode=pe,
            )
        )
        labels.append(bool(arrays["nondiagnostic"][i]))
        rows, cols = arrays["images"].shape[1:]
        out.meta.append(
            {
                "source": str(arrays["source"][i]),
                "sequence": str(arrays["sequence"][i]),
                "field": f"{float(arrays['field_strength_t'][i]):g}T",
                "matrix": f"{rows}x{cols}",
                "phase_encode": pe,
            }
        )
    out.headers = np.stack(headers) if headers else np.zeros((0, 8), np.float32)
    out.nondiagnostic = np.array(labels, dtype=bool)
    out.present = np.stack(present) if present else np.zeros((0, len(ARTIFACT_TYPES)), bool)
    return out


CACHE_VERSION = 1


def _write_cache(path: Path, split: Split) -> None:
    """An uncompressed ``.npz`` whose flat ``images``/``masks`` are streamed slice by slice (a
    concatenated copy of thousands of slices would double the loader's memory)."""
    shapes = np.array([im.shape for im in split.images], np.int64).reshape(-1, 2)
    small = {
        "shapes": shapes,
        "headers": split.headers,
        "nondiagnostic": split.nondiagnostic,
        "present": split.present,
        "meta": np.array(json.dumps(split.meta)),
    }
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, value in small.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
        for key, parts, dtype in (("images", split.images, "<f4"), ("masks", split.masks, "|u1")):
            total = sum(int(p.size) for p in parts)
            with archive.open(f"{key}.npy", "w", force_zip64=True) as f:
                header = {"descr": dtype, "fortran_order": False, "shape": (total,)}
                np.lib.format.write_array_header_2_0(f, header)
                for part in parts:
                    f.write(np.ascontiguousarray(part, dtype=np.dtype(dtype)).tobytes())
    tmp.replace(path)


def _read_cache(path: Path, working: int) -> Split:
    with np.load(path) as z:
        shapes, images, masks = z["shapes"], z["images"], z["masks"]
        out = Split(
            headers=z["headers"],
            nondiagnostic=z["nondiagnostic"],
            present=z["present"],
            meta=json.loads(str(z["meta"])),
            working=working,
        )
    k, i = len(ARTIFACT_TYPES), 0
    for rows, cols in shapes:
        n = int(rows * cols)
        out.images.append(images[i : i + n].reshape(rows, cols))
        out.masks.append(masks[k * i : k * (i + n)].reshape(k, rows, cols))
        i += n
    return out


def _present(split: Split) -> NDArray[np.bool_]:
    if len(split.present) == len(split):
        return split.present
    return np.stack([m.reshape(m.shape[0], -1).any(axis=1) for m in split.masks])


def type_frequencies(split: Split) -> NDArray[np.float64]:
    """float64 ``(K,)``: share of slices whose ground truth contains each type."""
    if not len(split):
        return np.zeros(len(ARTIFACT_TYPES))
    return np.asarray(_present(split).mean(axis=0), dtype=np.float64)


def class_weights(split: Split) -> list[float]:
    """Per-type Dice weights ∝ 1/√(slice frequency), mean 1 (class balancing)."""
    freq = np.maximum(type_frequencies(split), 0.01)
    weights = 1.0 / np.sqrt(freq)
    return [float(w) for w in weights / weights.mean()]


def slice_weights(split: Split) -> NDArray[np.float64]:
    """float64 ``(N,)`` sampling probabilities that favour slices with rare types.

    A slice's weight is the largest ``1/√(frequency)`` of the types in its ground truth (clean
    slices: ``1/√`` of the clean share), so a chemical-shift slice (3 % of slices) is drawn about
    twice as often as a spike slice (13 %); sums to 1.
    """
    if not len(split):
        return np.zeros(0)
    present = _present(split)
    freq = np.maximum(present.mean(axis=0), 0.01)
    clean = max(float((~present.any(axis=1)).mean()), 0.01)
    per_type = np.where(present, 1.0 / np.sqrt(freq), 0.0).max(axis=1)
    weights = np.where(present.any(axis=1), per_type, 1.0 / np.sqrt(clean))
    return np.asarray(weights / weights.sum(), dtype=np.float64)


def _crop_origin(
    mask: NDArray[np.uint8], size: int, rng: np.random.Generator, foreground: float
) -> tuple[int, int]:
    """Top-left corner of a crop: uniform, or (with chance ``foreground``) around a random
    ground-truth pixel of one of the slice's types, so thin, rare masks are seen in training."""
    rows, cols = mask.shape[1:]
    r_max, c_max = max(rows - size, 0), max(cols - size, 0)
    if foreground > 0 and rng.random() < foreground:
        types = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
        if len(types):
            pixels = np.flatnonzero(mask[int(rng.choice(types))])
            r, c = divmod(int(pixels[rng.integers(len(pixels))]), cols)
            r0 = r - int(rng.integers(size // 4, size - size // 4))
            c0 = c - int(rng.integers(size // 4, size - size // 4))
            return int(np.clip(r0, 0, r_max)), int(np.clip(c0, 0, c_max))
    return int(rng.integers(0, r_max + 1)), int(rng.integers(0, c_max + 1))


def _augment(
    image: NDArray[np.float32], mask: NDArray[np.uint8], rng: np.random.Generator
) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Flips along either axis (the phase-encode axis stays where it is) and a mild intensity
    gamma (0.8–1.25; the head's p99 stays ~1); views where possible."""
    if rng.random() < 0.5:
        image, mask = image[::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, :, ::-1]
    if rng.random() < 0.5:
        image = np.maximum(image, 0) ** np.float32(rng.uniform(0.8, 1.25))
    return image, mask


def crop_batch(
    split: Split,
    indices: NDArray[np.int64],
    size: int,
    rng: np.random.Generator,
    augment: bool,
    foreground: float = 0.0,
) -> tuple[dict[str, NDArray[np.float32]], dict[str, NDArray[np.float32]]]:
    """Random ``size``² crops (zero-padded when a slice is smaller) of the given slices.

    ``foreground``: the chance that a crop is placed around a ground-truth pixel of one of the
    slice's artifact types (the pixel lands in the middle half of the crop) instead of uniformly
    (foreground oversampling as in nnU-Net; 0 = uniform, as validation uses).

    Returns ``(x, y)`` for Keras: ``x = {"image": (B, size, size, 1), "header": (B, 8)}``,
    ``y = {"masks": (B, size, size, K), "presence": (B, K), "suitability": (B, 1)}``, float32.
    Augmentation keeps the phase-encode axis: flips along either axis and a mild intensity gamma
    (0.8–1.25; the head's p99 stays ~1). Presence is taken from the crop's masks; suitability
    is the whole slice's label.
    """
    n_types = len(ARTIFACT_TYPES)
    images = np.zeros((len(indices), size, size, 1), np.float32)
    masks = np.zeros((len(indices), size, size, n_types), np.float32)
    for b, i in enumerate(indices):
        image, mask = split.images[i], split.masks[i]
        r0, c0 = _crop_origin(mask, size, rng, foreground)
        im = image[r0 : r0 + size, c0 : c0 + size]
        mk = mask[:, r0 : r0 + size, c0 : c0 + size]
        if augment:
            im, mk = _augment(im, mk, rng)
        images[b, : im.shape[0], : im.shape[1], 0] = im
        masks[b, : im.shape[0], : im.shape[1]] = np.moveaxis(mk, 0, -1)
    presence = masks.reshape(len(indices), -1, n_types).max(axis=1)
    suitability = (~split.nondiagnostic[indices]).astype(np.float32)[:, None]
    x = {"image": images, "header": split.headers[indices]}
    y = {"masks": masks, "presence": presence, "suitability": suitability}
    return x, y


def shape_groups(split: Split) -> dict[tuple[int, int], NDArray[np.int64]]:
    """Slice indices by image shape (a whole-slice batch holds one shape)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(split.images):
        groups.setdefault((image.shape[0], image.shape[1]), []).append(i)
    return {k: np.array(v, np.int64) for k, v in groups.items()}


def draw_whole_batch(
    split: Split,
    groups: dict[tuple[int, int], NDArray[np.int64]],
    size: int,
    rng: np.random.Generator,
    p: NDArray[np.float64] | None = None,
) -> NDArray[np.int64]:
    """``size`` slice indices of one working shape: the first drawn from the whole split (with
    probabilities ``p`` or uniformly), the others from the slices of its shape (same weights),
    so every slice keeps its chance of being seen whatever the shape mix."""
    first = int(rng.choice(len(split), p=p))
    group = groups[(split.images[first].shape[0], split.images[first].shape[1])]
    weights = None if p is None else p[group] / p[group].sum()
    rest = rng.choice(group, size=size - 1, p=weights)
    return np.concatenate([[first], rest]).astype(np.int64)


def whole_batch(
    split: Split, indices: NDArray[np.int64], rng: np.random.Generator, augment: bool
) -> tuple[dict[str, NDArray[np.float32]], dict[str, NDArray[np.float32]]]:
    """Whole slices of a working-grid split (all of one shape, :func:`draw_whole_batch`).

    Returns ``(x, y)`` like :func:`crop_batch`, with the soft masks (area fractions) as mask
    targets and the whole slice's ``present`` labels as presence targets. Augmentation: flips
    along either axis, a mild intensity gamma (0.8–1.25).
    """
    if split.working is None:
        raise ValueError("whole_batch needs a split loaded at a working size")
    n_types = len(ARTIFACT_TYPES)
    rows, cols = split.images[int(indices[0])].shape
    images = np.zeros((len(indices), rows, cols, 1), np.float32)
    masks = np.zeros((len(indices), rows, cols, n_types), np.float32)
    for b, i in enumerate(indices):
        im, mk = split.images[i], split.masks[i]
        if im.shape != (rows, cols):
            raise ValueError(f"slices of different working shapes in one batch: {im.shape}")
        if augment:
            im, mk = _augment(im, mk, rng)
        images[b, :, :, 0] = im
        masks[b] = np.moveaxis(mk, 0, -1) * np.float32(1 / 255)
    x = {"image": images, "header": split.headers[indices]}
    y = {
        "masks": masks,
        "presence": split.present[indices].astype(np.float32),
        "suitability": (~split.nondiagnostic[indices]).astype(np.float32)[:, None],
    }
    return x, y
