"""Pre- and post-processing of the scoring pipeline on NumPy or CuPy.

The same definitions as ``ml.model.preprocess`` (``normalise``, ``pad_to_stride``) and the
pipeline's thresholding, batched and written against ``xp`` so that, on a machine with a GPU
and CuPy, the slices are normalised, padded, thresholded and cropped on the device and only the
network's input and the binary masks cross the bus. Outputs equal the NumPy ones (the tests run
every case on both).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from gpu_ops import array_module, to_numpy


def normalise_batch(images: Any) -> Any:
    """float32 ``(S, H, W)``, each slice scaled so the p99 inside its head is 1.

    The head is the pixels above 10 % of the slice's p99 (linear-interpolated percentiles, as
    ``numpy.percentile``); an all-zero (or non-finite p99) slice comes back as zeros. Same array
    kind as ``images``.
    """
    xp = array_module(images)
    images = xp.asarray(images, dtype=xp.float32)
    s = images.shape[0]
    top = xp.percentile(images.reshape(s, -1), 99.0, axis=1)
    out = xp.zeros_like(images)
    for i in range(s):
        t = float(top[i])
        if not (t > 0 and t < float("inf")):
            continue
        inside = images[i][images[i] > 0.1 * t]
        scale = float(xp.percentile(inside, 99.0)) if inside.size else t
        out[i] = images[i] / xp.float32(scale if scale > 0 else t)
    return out


def pad_batch(batch: Any, stride: int) -> Any:
    """float32 ``(S, H, W)`` zero-padded at the bottom and right to multiples of ``stride``."""
    xp = array_module(batch)
    rows, cols = batch.shape[-2:]
    prow, pcol = -(-rows // stride) * stride, -(-cols // stride) * stride
    if (prow, pcol) == (rows, cols):
        return batch
    out = xp.zeros((*batch.shape[:-2], prow, pcol), dtype=xp.float32)
    out[..., :rows, :cols] = batch
    return out


def canonical_batch(batch: Any, phase_encode: str) -> Any:
    """Put phase-encode on the last axis of ``(..., H, W)``: unchanged for ``ROW``, the last two
    axes swapped for ``COL`` (its own inverse)."""
    if phase_encode == "ROW":
        return batch
    if phase_encode != "COL":
        raise ValueError(f"phase_encode must be 'ROW' or 'COL', not {phase_encode!r}")
    return array_module(batch).swapaxes(batch, -1, -2)


def threshold_masks(probabilities: Any, rows: int, cols: int, thresholds: Any) -> Any:
    """Binary masks from the network's per-pixel probabilities.

    ``probabilities`` float32 ``(S, H', W', K)`` on the padded canonical grid; ``thresholds``
    float32 ``(K,)``. Returns uint8 ``(S, K, rows, cols)`` (1 where probability ≥ threshold),
    cropped to the canonical slice size, same array kind as ``probabilities``.
    """
    xp = array_module(probabilities)
    cropped = probabilities[:, :rows, :cols]
    binary = (cropped >= xp.asarray(thresholds, dtype=xp.float32)).astype(xp.uint8)
    return xp.ascontiguousarray(xp.moveaxis(binary, -1, 1))


MASK_MODES = ("pixel", "gated", "whole", "line", "level", "head")
"""How a type's served mask is made: ``pixel`` the decoder's per-pixel probability, ``gated`` that
times the type's presence, ``whole`` the presence over the whole slice (for types whose ground
truth covers almost the whole slice by construction: a spike's stripes, noise), ``line`` the
presence on the line along phase-encode that stands out of the input image
(:func:`line_map`: a zipper), ``level`` the presence on where the noise level measured in the
image's air passes the ground truth's rule (:func:`level_map`: noise), ``head`` the presence on
the head found the same way (:func:`head_map`: ghosting)."""

LINE_OFFSETS = (2, 3)
"""Rows either side whose mean is a row's local baseline in :func:`line_map`."""
LINE_HALF_WIDTH = 1
"""Rows either side of the standing-out row that :func:`line_map` marks too."""
LINE_LEVEL = 0.1
"""Residual (in units of the slice's normalised p99) at which :func:`line_map` reaches 1."""


LEVEL_BLOCK = 8
"""Side of the blocks whose means :func:`level_map` reads the noise level and the head from."""
LEVEL_HEAD = 0.1
"""A block is the head's when its mean passes this (the normalised head's p99 is 1) and
:data:`LEVEL_HEAD_OVER_AIR` times the air's level."""
LEVEL_HEAD_OVER_AIR = 2.5
LEVEL_INSIDE = 2.0 / math.pi
"""Mean |n| inside tissue over mean |n| in air for the same complex Gaussian noise of standard
deviation sigma: sqrt(2/pi) sigma (Gaussian) over sqrt(pi/2) sigma (Rayleigh)."""
LEVEL_AIR_BIAS = 1.25
"""The air's level is the least of many block means, which sits below their common mean: for
Rayleigh pixels (standard deviation 0.52 of the mean) in blocks of 64 the least of a few hundred
blocks is ~0.8 of the mean (measured: 0.79-0.81 on noise of sigma 0.01-0.05 over a 128² head
phantom); this factor puts it back."""
LEVEL_FULL = 0.1
"""Mean |A - C| (units of the normalised p99) at which :func:`level_map` reaches 1: twice the
ground truth's 0.05, so the map crosses 0.5 where the rule marks noise."""


def level_map(images: Any) -> Any:
    """Where the noise measured in each slice's air passes the ground truth's rule: float32
    ``(S, H, W)`` in [0, 1].

    ``images`` float32 ``(S, H, W)``: the network's input (normalised: the head's p99 is 1).
    Thermal noise is the same complex Gaussian everywhere (sigma); the ground truth marks where
    the smoothed |A - C| passes 0.05 of the reference, and the mean of |A - C| is
    sqrt(pi/2) sigma in air (Rayleigh: C = 0) and sqrt(2/pi) sigma inside tissue. The air's
    level is the lowest mean of the :data:`LEVEL_BLOCK`-pixel blocks (robust to ghosts and
    folded anatomy over part of the air, which only raise some blocks); the head is the blocks
    whose mean stands above it (:data:`LEVEL_HEAD`, :data:`LEVEL_HEAD_OVER_AIR`), filled along
    rows and columns (the dark CSF inside the skull is the head's). The map is that level in
    the air and :data:`LEVEL_INSIDE` of it in the head, over :data:`LEVEL_FULL`, clipped. It
    does not tell noise from other artifacts that raise the air everywhere: the ``level`` mode
    multiplies it by the type's presence (``ml.model.network.MaskMode`` computes the same in
    the graph). Shipped full model, noise IoU: 0.82 → 0.87 on the 700 validation slices, 0.65 →
    0.74 on the test brains (``ml/MODEL_CARD.md``, "Round 8").
    """
    xp = array_module(images)
    least, head = _air_and_head(images)
    level = least * xp.float32(LEVEL_AIR_BIAS) * (1.0 - (1.0 - xp.float32(LEVEL_INSIDE)) * head)
    return xp.clip(level / xp.float32(LEVEL_FULL), 0.0, 1.0).astype(xp.float32)


def head_map(images: Any) -> Any:
    """The head of each slice as :func:`level_map` finds it: float32 ``(S, H, W)``, 1 on the
    :data:`LEVEL_BLOCK`-pixel blocks whose mean stands above the air's (:data:`LEVEL_HEAD`,
    :data:`LEVEL_HEAD_OVER_AIR`), filled along rows and columns, 0 in the air.

    ``images`` float32 ``(S, H, W)``: the network's input. The ``head`` mode puts the type's
    presence on it, for types whose ground truth lies in the head rather than over the whole
    slice (ghosting: the simulator's ghosts are marked where they fall on the brain).
    """
    xp = array_module(images)
    return _air_and_head(images)[1].astype(xp.float32)


def _air_and_head(images: Any) -> tuple[Any, Any]:
    """The least :data:`LEVEL_BLOCK`-pixel block mean per slice ``(S, 1, 1)`` and the filled
    head ``(S, H, W)`` (0/1) of :func:`level_map` and :func:`head_map`."""
    xp = array_module(images)
    x = xp.asarray(images, dtype=xp.float32)
    s, h, w = x.shape
    b = LEVEL_BLOCK
    hb, wb = max(h // b, 1), max(w // b, 1)
    if h < b or w < b:  # smaller than a block: one block of what there is
        blocks = x.reshape(s, 1, h * w).mean(axis=2, keepdims=True)
    else:
        blocks = x[:, : hb * b, : wb * b].reshape(s, hb, b, wb, b).mean(axis=(2, 4))
    least = blocks.min(axis=(1, 2), keepdims=True)
    above = (blocks > xp.maximum(xp.float32(LEVEL_HEAD), LEVEL_HEAD_OVER_AIR * least)).astype(
        xp.float32
    )
    head = _filled(above, 1) * _filled(above, 2)
    head = xp.repeat(xp.repeat(head, b, axis=1), b, axis=2)[:, :h, :w]
    if head.shape[1:] != (h, w):  # the last partial blocks are their neighbours'
        head = xp.pad(head, ((0, 0), (0, h - head.shape[1]), (0, w - head.shape[2])), mode="edge")
    return least, head


def _filled(above: Any, axis: int) -> Any:
    """1 between the first and the last 1 along ``axis`` (inclusive), else 0."""
    xp = array_module(above)
    before = xp.cumsum(above, axis=axis)
    after = above.sum(axis=axis, keepdims=True) - before + above
    return ((before > 0) & (after > 0)).astype(xp.float32)


def _shifted(x: Any, d: int, axis: int) -> Any:
    """``x`` moved so that index ``i`` holds ``x[i + d]`` along ``axis``, the edge repeated."""
    xp = array_module(x)
    n = x.shape[axis]
    return xp.take(x, xp.clip(xp.arange(n) + d, 0, n - 1), axis=axis)


def line_map(images: Any) -> Any:
    """Where a line along phase-encode stands out of each slice: float32 ``(S, H, W)`` in [0, 1].

    ``images`` float32 ``(S, H, W)``: the network's input (canonical, so phase-encode runs along
    the last axis; normalised). A zipper (RF interference at one frequency) is one row, along
    the whole phase-encode axis, brighter than its neighbours. Per slice: the row whose mean
    stands out most from the mean of the rows :data:`LINE_OFFSETS` either side, and the
    :data:`LINE_HALF_WIDTH` rows either side of it, each pixel weighted by how far that row
    departs from its baseline there (absolute difference, averaged over three columns, reaching
    1 at :data:`LINE_LEVEL`); 0 elsewhere. The ``line`` mask mode multiplies it by the type's
    presence (``ml.model.network.MaskMode`` computes the same in the graph). On the round-5 full
    model, whose zipper mask channel had died: zipper IoU on its validation brain 0 → 0.53
    (``ml/MODEL_CARD.md``, "Round 6").
    """
    xp = array_module(images)
    x = xp.asarray(images, dtype=xp.float32)
    n_off = 2 * len(LINE_OFFSETS)
    rows = x.mean(axis=2)
    base = sum(_shifted(rows, d, 1) for o in LINE_OFFSETS for d in (-o, o)) / xp.float32(n_off)
    standing = rows - base
    peak = (standing >= standing.max(axis=1, keepdims=True)).astype(xp.float32)
    base2d = sum(_shifted(x, d, 1) for o in LINE_OFFSETS for d in (-o, o)) / xp.float32(n_off)
    residual = xp.abs(x - base2d)
    residual = (_shifted(residual, -1, 2) + residual + _shifted(residual, 1, 2)) / xp.float32(3)
    along = (peak[:, :, None] * residual).sum(axis=1)  # (S, W): the standing-out row's residual
    band = peak
    for d in range(1, LINE_HALF_WIDTH + 1):
        band = xp.maximum(band, xp.maximum(_shifted(peak, -d, 1), _shifted(peak, d, 1)))
    weight = xp.clip(along / xp.float32(LINE_LEVEL), 0.0, 1.0)
    return (band[:, :, None] * weight[:, None, :]).astype(xp.float32)


def apply_mask_modes(
    probabilities: Any, presence: Any, modes: Sequence[str], images: Any = None
) -> Any:
    """The served masks of ``ml.model.network.MaskMode``: per type ``k``, ``pixel`` keeps the
    per-pixel probability, ``gated`` multiplies it by ``presence[:, k]``, ``whole`` puts
    ``presence[:, k]`` on every pixel, ``line`` puts it on :func:`line_map` of ``images``,
    ``level`` on :func:`level_map` of them, ``head`` on :func:`head_map` — the same float32
    values the exported graph computes.

    ``probabilities`` float32 ``(S, K, H, W)`` (channel-first), ``presence`` float32 ``(S, K)``;
    ``modes`` K names; ``images`` float32 ``(S, H, W)``, the network's input (only for the
    modes of :data:`IMAGE_MAPS`). Returns ``(S, K, H, W)``: ``probabilities`` itself when every
    mode is ``pixel``, else a new array; same array kind.
    """
    if all(mode == "pixel" for mode in modes):
        return probabilities
    xp = array_module(probabilities)
    out = xp.array(probabilities, dtype=xp.float32, copy=True)
    maps = image_maps(modes, images)
    for k, mode in enumerate(modes):
        p = presence[:, k, None, None]
        if mode == "gated":
            out[:, k] = probabilities[:, k] * p
        elif mode == "whole":
            out[:, k] = p
        elif mode in maps:
            out[:, k] = maps[mode] * p
    return out


IMAGE_MAPS: dict[str, Callable[[Any], Any]] = {
    "line": line_map,
    "level": level_map,
    "head": head_map,
}
"""The mask modes made from the network's input image, and the map each one puts the type's
presence on."""


def image_maps(modes: Sequence[str], images: Any) -> dict[str, Any]:
    """The maps (``(S, H, W)``) of :data:`IMAGE_MAPS` that ``modes`` use, made from ``images``
    (the network's input); ValueError when one is needed and ``images`` is None."""
    used = [m for m in IMAGE_MAPS if m in modes]
    if used and images is None:
        raise ValueError(f"the {used[0]} mask mode needs the network's input images")
    return {m: IMAGE_MAPS[m](images) for m in used}


def serve_masks(
    probabilities: Any,
    presence: Any,
    modes: Sequence[str],
    thresholds: Any,
    rows: int,
    cols: int,
    resize: Callable[[Any], Any] | None = None,
    out: Any = None,
    images: Any = None,
    stacked: bool | None = None,
) -> Any:
    """Binary masks from the network's per-pixel probabilities, type by type.

    ``probabilities`` float32 ``(S, K, H', W')`` per pixel before the mask modes, channel-first
    (a strided view is fine) on the network's grid; ``presence`` float32 ``(S, K)``; ``modes`` K
    names (:func:`apply_mask_modes`); ``thresholds`` float32 ``(K,)``; ``resize`` maps one
    ``(H', W')`` plane to ``(rows, cols)`` (the working grid's way back), None = crop the padding;
    ``out``: a uint8 ``(S, K, rows, cols)`` array (a strided view is fine) to write into;
    ``images`` float32 ``(S, H', W')``: the network's input (only for a type whose mode is
    one of :data:`IMAGE_MAPS`).
    Returns uint8 ``(S, K, rows, cols)``, 1 where the served probability ≥ the type's threshold:
    equal to :func:`threshold_masks` of the served masks (a ``whole`` type is one comparison per
    slice, since a constant plane resizes to itself), same array kind as ``probabilities``. An
    image mode's plane is the map resized once per slice, times each of its types' presence (a
    linear resize commutes with that scale up to float rounding; the evaluation's tuning
    computes it the same way): 3 head and 2 level types of the pruned model cost ~0.2 s more
    per 32-slice 384×512 series resized type by type.
    Plane by plane, so the temporaries stay cache-sized; with ``stacked`` (default: on a GPU)
    all slices of a type at once instead, ``resize`` then taking the stack ``(S, H', W')``:
    the same values, in ~10 calls instead of ~320 for a 32-slice series (on the H200 the plane
    loop's kernel launches cost ~0.05 s of the pruned model's 0.27 s).
    """
    xp = array_module(probabilities)
    s, k_count = probabilities.shape[:2]
    if out is None:
        out = xp.empty((s, k_count, rows, cols), dtype=xp.uint8)
    flags = out.view(xp.bool_)
    limits = [xp.float32(t) for t in to_numpy(thresholds).tolist()]
    maps = image_maps(modes, images)
    if stacked is None:
        stacked = xp.__name__ != "numpy"  # CuPy: a GPU's arrays
    if stacked:
        _serve_stacked(probabilities, presence, modes, limits, rows, cols, resize, flags, maps)
        return out
    for k, mode in enumerate(modes):
        if mode == "whole":
            out[:, k] = (presence[:, k] >= limits[k]).astype(xp.uint8)[:, None, None]
        elif mode not in maps:
            for i in range(s):
                plane = probabilities[i, k]
                if mode == "gated":
                    plane = plane * presence[i, k]
                plane = plane[:rows, :cols] if resize is None else resize(plane)
                xp.greater_equal(plane, limits[k], out=flags[i, k])
    for mode, image_map in maps.items():
        types = [k for k, m in enumerate(modes) if m == mode]
        for i in range(s):
            plane = image_map[i, :rows, :cols] if resize is None else resize(image_map[i])
            for k in types:
                xp.greater_equal(plane * presence[i, k], limits[k], out=flags[i, k])
    return out


def _serve_stacked(
    probabilities: Any,
    presence: Any,
    modes: Sequence[str],
    limits: list[Any],
    rows: int,
    cols: int,
    resize: Callable[[Any], Any] | None,
    flags: Any,
    maps: dict[str, Any],
) -> None:
    """:func:`serve_masks` one type at a time over all slices (``flags`` bool ``(S, K, rows,
    cols)`` written in place)."""
    xp = array_module(probabilities)
    for k, mode in enumerate(modes):
        if mode == "whole":
            flags[:, k] = (presence[:, k] >= limits[k])[:, None, None]
        elif mode not in maps:
            planes = probabilities[:, k]
            if mode == "gated":
                planes = planes * presence[:, k, None, None]
            planes = planes[:, :rows, :cols] if resize is None else resize(planes)
            xp.greater_equal(planes, limits[k], out=flags[:, k])
    for mode, image_map in maps.items():
        planes = image_map[:, :rows, :cols] if resize is None else resize(image_map)
        for k in (k for k, m in enumerate(modes) if m == mode):
            xp.greater_equal(planes * presence[:, k, None, None], limits[k], out=flags[:, k])


# --- presence from the acquisition's k-space -----------------------------------------------

KSPACE_FEATURES = ("kspace_step_rows", "kspace_step_columns")
"""The per-slice measurements of :func:`kspace_features`, in order."""
KSPACE_CHUNK = 4
"""Slices transformed at a time by :func:`kspace_features`."""
KSPACE_FLOOR = 1e-9
"""Floor of a power profile, relative to its peak, before its logarithm (a noiseless slice's
empty outer k-space would otherwise give an unbounded step)."""


def kspace_features(images: Any) -> Any:
    """How sharply each slice's k-space ends, along each axis: float32 ``(S, 2)`` in the order
    of :data:`KSPACE_FEATURES`.

    ``images`` float32 ``(S, H, W)``: canonical and normalised, **on the slice's own grid**
    (not the network's working grid, whose resampling cuts the outer k-space off). A scanner
    that acquires fewer k-space lines than the matrix it shows zero-fills the rest: Gibbs
    ringing (``ml.simulate.gibbs``), a hard box in k-space that the image domain shows only as
    faint rings the network does not learn (presence ROC AUC ~0.74 on the test brains).
    Beyond the box there is nothing, not even the thermal noise that fills the rest of an
    acquired k-space, so the power falls by orders of magnitude at its edge. Per
    axis, the power profile is the image's power spectrum summed over the other axis
    (a real slice's is symmetric about frequency 0); the measurement is the largest drop of its
    logarithm between two adjacent windows of ``max(2, n // 64)`` frequencies, outward from
    ``max(1, n // 16)`` beyond the centre, on
    either side, and it is reported as ``log1p`` of that drop (≥ 0). The anatomy's own
    spectrum and the noise floor roll off or stay flat from one window to the next; a
    zero-filled box drops. On its own it ranks the Gibbs slices of the
    test brains with ROC AUC ~0.95 (``ml/MODEL_CARD.md``, "Round 10").
    """
    xp = array_module(images)
    images = xp.asarray(images, dtype=xp.float32)
    if images.ndim != 3:
        raise ValueError(f"images must be (S, H, W), not {images.shape}")
    if images.shape[0] == 0:
        return xp.zeros((0, 2), dtype=xp.float32)
    rows = _kspace_step(_power_profile(images, axis=1), images.shape[1])
    columns = _kspace_step(_power_profile(images, axis=2), images.shape[2])
    return xp.stack([rows, columns], axis=1).astype(xp.float32)


def _power_profile(images: Any, axis: int) -> Any:
    """``(S, n // 2 + 1)``: the power spectrum of ``images`` ``(S, H, W)`` summed over the
    other axis, at the non-negative frequencies of ``axis`` (``n`` long). By Parseval along the
    other axis that is the power of the 1-D transforms along ``axis`` summed over the other
    one (up to a constant factor), and a real image's spectrum is symmetric, so one real
    1-D FFT of the batch gives it: 32 slices of 384×512 in ~0.1 s (NumPy's, complex64), where
    the 2-D spectrum took seconds and a complex128 copy of the batch."""
    import sys

    import numpy as np

    xp = array_module(images)
    scipy_fft = sys.modules.get("scipy.fft")
    parts = []
    # A few slices at a time: the spectra and their squares stay cache-sized (32 slices of
    # 384×512 in one piece: 0.17 s and ~100 MB of temporaries; by 4: 0.09 s).
    for start in range(0, images.shape[0], KSPACE_CHUNK):
        chunk = images[start : start + KSPACE_CHUNK]
        if xp is np and scipy_fft is not None:  # multithreaded, where SciPy is loaded already
            spectrum = scipy_fft.rfft(chunk, axis=axis, workers=-1)
        else:  # importing SciPy would cost a cold scoring process ~0.3 s, more than the FFT
            spectrum = xp.fft.rfft(chunk, axis=axis)
        power = spectrum.real**2 + spectrum.imag**2
        parts.append(power.sum(axis=2 if axis == 1 else 1))
    return xp.concatenate(parts).astype(xp.float32)


def _kspace_step(profile: Any, n: int) -> Any:
    """``log1p`` of the largest drop of ``log(profile)`` between adjacent windows, outward
    from the centre (:func:`kspace_features`); ``profile`` ``(S, n // 2 + 1)`` from frequency 0
    outward, ``n`` the axis's length; returns ``(S,)``. Both sides of the centred spectrum
    are read, as the centred ``n``-point spectrum has them: ``n - n // 2`` frequencies on the
    positive side, ``n // 2 + 1`` on the negative (the Nyquist one for an even ``n``)."""
    xp = array_module(profile)
    s = profile.shape[0]
    peak = profile.max(axis=1, keepdims=True)
    # The floor stays a normal float32 even for a blank slice (no log(0) under flush-to-zero).
    floor = xp.maximum(peak * xp.float32(KSPACE_FLOOR), xp.float32(1e-30))
    logs = xp.log(profile + floor)
    window, centre = max(2, n // 64), n // 2
    best = xp.zeros(s, dtype=xp.float32)
    for side in (logs[:, : n - centre], logs[:, : centre + 1]):
        length = side.shape[1]
        at = xp.arange(window + max(1, n // 16), length - window + 1)  # never the DC bin
        if at.size == 0:
            continue
        sums = xp.concatenate([xp.zeros((s, 1), side.dtype), xp.cumsum(side, axis=1)], axis=1)
        inner = (sums[:, at] - sums[:, at - window]) / window
        outer = (sums[:, at + window] - sums[:, at]) / window
        best = xp.maximum(best, (inner - outer).max(axis=1))
    return xp.log1p(xp.nan_to_num(xp.maximum(best, 0.0))).astype(xp.float32)


PRESENCE_STACK_INPUTS = ("presence_logit", "kspace_step_mean")
"""What a :class:`PresenceStack` reads per slice: the network's presence logit and the mean of
the two axes' :func:`kspace_features` (a zero-filled acquisition truncates both axes; one
number, so no fit can weigh one axis against the other: fitted on both, the first fit gave the
columns a negative weight)."""
PRESENCE_CLIP = 1e-4
"""Presence is clipped to [this, 1 - this] before its logit."""


def stack_inputs(features: Any) -> Any:
    """The k-space inputs of a :class:`PresenceStack` from :func:`kspace_features` ``(S, 2)``:
    ``(S, 1)``, the mean of the two axes."""
    return features.mean(axis=1, keepdims=True)


class PresenceStack:
    """A type's presence re-estimated from the network's and the k-space's evidence together.

    For each stacked type ``k``: ``sigmoid(sum_j w_kj (x_j - mean_kj) / scale_kj + bias_k)``
    with ``x`` = :data:`PRESENCE_STACK_INPUTS` (a logistic regression fitted on the validation
    split by ``ml evaluate --tune``, kept for a type only where it ranks that split's slices
    clearly better than the network alone); the other types keep the network's presence. The
    mask modes that multiply by presence use the stacked value, so a type served on an image
    map (``level``, ``head``, ...) is switched on by it. Written to and read from the weights'
    sidecar (``MODEL.thresholds.json``, key ``presence_stack``) with :meth:`to_json` and
    :meth:`from_json`.
    """

    def __init__(
        self,
        types: Sequence[int],
        mean: Any,
        scale: Any,
        weights: Any,
        bias: Any,
    ) -> None:
        import numpy as np

        self.types = tuple(int(k) for k in types)
        self.mean = np.asarray(mean, np.float32).reshape(len(self.types), -1)
        self.scale = np.asarray(scale, np.float32).reshape(len(self.types), -1)
        self.weights = np.asarray(weights, np.float32).reshape(len(self.types), -1)
        self.bias = np.asarray(bias, np.float32).reshape(len(self.types))
        width = len(PRESENCE_STACK_INPUTS)
        if any(a.shape[1] != width for a in (self.mean, self.scale, self.weights)):
            raise ValueError(f"a presence stack reads {width} inputs: {PRESENCE_STACK_INPUTS}")
        if not np.all(np.isfinite(self.scale)) or np.any(self.scale <= 0):
            raise ValueError("a presence stack's scales must be positive")
        if not all(np.all(np.isfinite(a)) for a in (self.mean, self.weights, self.bias)):
            raise ValueError("a presence stack's numbers must be finite")

    def __bool__(self) -> bool:
        return bool(self.types)

    def apply(self, presence: Any, features: Any) -> Any:
        """``presence`` float32 ``(S, K)`` with the stacked types re-estimated from it and
        ``features`` ``(S, 2)`` (:func:`kspace_features`, per axis); a new array, same kind."""
        xp = array_module(presence)
        out = xp.array(presence, dtype=xp.float32, copy=True)
        if not self.types:
            return out
        clipped = xp.clip(out[:, list(self.types)], PRESENCE_CLIP, 1.0 - PRESENCE_CLIP)
        logit = xp.log(clipped / (1.0 - clipped))  # (S, T)
        step = stack_inputs(xp.asarray(features, dtype=xp.float32))
        for t, k in enumerate(self.types):
            x = xp.concatenate([logit[:, t, None], step], axis=1)  # (S, F)
            z = (x - xp.asarray(self.mean[t])) / xp.asarray(self.scale[t])
            score = z @ xp.asarray(self.weights[t]) + xp.float32(self.bias[t])
            out[:, k] = 1.0 / (1.0 + xp.exp(-score))
        return out.astype(xp.float32)

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        """The sidecar's ``presence_stack`` entry (types by name)."""
        return {
            "inputs": list(PRESENCE_STACK_INPUTS),
            "types": {
                names[k]: {
                    "mean": [float(v) for v in self.mean[t]],
                    "scale": [float(v) for v in self.scale[t]],
                    "weights": [float(v) for v in self.weights[t]],
                    "bias": float(self.bias[t]),
                }
                for t, k in enumerate(self.types)
            },
        }

    @classmethod
    def from_json(cls, content: Any, names: Sequence[str]) -> PresenceStack | None:
        """The stack a sidecar's ``presence_stack`` entry describes; None when there is none
        (or it stacks no type). ValueError on an entry this code cannot read (other inputs, an
        unknown type, missing numbers): a stack read wrongly would serve wrong masks."""
        if content is None:
            return None
        if not isinstance(content, dict) or not isinstance(content.get("types"), dict):
            raise ValueError("presence_stack must be {'inputs': [...], 'types': {...}}")
        if list(content.get("inputs", [])) != list(PRESENCE_STACK_INPUTS):
            raise ValueError(
                f"presence_stack reads {content.get('inputs')}, this code computes "
                f"{list(PRESENCE_STACK_INPUTS)}"
            )
        types, rows = [], []
        for name, entry in content["types"].items():
            if name not in names:
                raise ValueError(f"presence_stack names an unknown type {name!r}")
            try:
                rows.append((entry["mean"], entry["scale"], entry["weights"], entry["bias"]))
            except (KeyError, TypeError) as exc:
                raise ValueError(f"presence_stack entry for {name!r} is incomplete") from exc
            types.append(list(names).index(name))
        if not types:
            return None
        mean, scale, weights, bias = (list(col) for col in zip(*rows, strict=True))
        return cls(types, mean, scale, weights, bias)
