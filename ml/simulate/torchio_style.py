"""Artifacts made the way TorchIO makes them: a second, independent artifact generator for testing.

The model learns from :mod:`ml.simulate`'s physics; it will be judged on artifacts other people
made with other code. To see how much of what it learnt is our simulators' handwriting, this
module re-implements, in 2-D and from the algorithms TorchIO documents (its ``RandomGhosting``,
``RandomSpike``, ``RandomMotion``, ``RandomBiasField`` and ``RandomNoise``; TorchIO needs
PyTorch, which this project does not install), the five of our ten types TorchIO generates:

- **ghosting**: every ``n``-th phase-encode line of k-space (``n`` in 4..10) scaled by
  ``1 - s`` (``s`` = severity), the central line restored;
- **spike**: one point of k-space at a uniformly drawn position raised by
  ``r · max|k|`` (``r`` = 0.1 + 0.9·severity; TorchIO's default is 1-3);
- **motion**: two rigid in-plane transforms (rotation up to 10°·severity, translation up to
  10 mm·severity, linear interpolation) at times 1/3 and 2/3 of the acquisition, each moved
  by up to ±0.1; k-space filled, along phase-encode, from the three positions' spectra in
  turn, the still position's in the part that holds the centre (so the anatomy stays put);
- **bias_field**: ``exp`` of a random polynomial of order 3 in the normalised coordinates,
  coefficients uniform in ±0.5·severity, multiplied in;
- **noise**: zero-mean Gaussian noise of std 0.25·severity·(the head's p99) added.

Unlike TorchIO the result is the magnitude (TorchIO keeps the real part), since scanners store
magnitudes; ghosting, motion and spike lines run along the header's phase-encode axis (TorchIO
draws an axis). Ground truth is the product's rule applied to (clean, artifacted), as for every
other slice (:func:`ml.simulate.ground_truth`). ``python -m ml dataset --style torchio``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ml.simulate._common import head_and_reference
from ml.simulate.header import AcquisitionHeader

FloatArray = NDArray[np.float32]

TYPES: tuple[str, ...] = ("motion", "ghosting", "spike", "bias_field", "noise")
"""The artifact types TorchIO generates (a subset of ``ml.ARTIFACT_TYPES``, same order)."""


def _pe_axis(header: AcquisitionHeader) -> int:
    """Array axis of phase encoding: ROW phase-encodes along a row (columns axis, 1)."""
    return 1 if header.phase_encode == "ROW" else 0


def _k(image: NDArray[np.floating[Any]]) -> NDArray[np.complex128]:
    return np.fft.fftshift(np.fft.fft2(image))


def _image(spectrum: NDArray[np.complex128]) -> FloatArray:
    return np.abs(np.fft.ifft2(np.fft.ifftshift(spectrum))).astype(np.float32)


def ghosting(
    image: FloatArray, severity: float, header: AcquisitionHeader, rng: np.random.Generator
) -> FloatArray:
    axis = _pe_axis(header)
    every = int(rng.integers(4, 11))
    spectrum = _k(image)
    centre = spectrum.shape[axis] // 2
    kept = np.take(spectrum, centre, axis=axis).copy()
    lines = [slice(None)] * 2
    lines[axis] = slice(None, None, every)
    spectrum[tuple(lines)] *= 1.0 - severity
    restore: list[slice | int] = [slice(None)] * 2
    restore[axis] = centre
    spectrum[tuple(restore)] = kept
    return _image(spectrum)


def spike(
    image: FloatArray, severity: float, header: AcquisitionHeader, rng: np.random.Generator
) -> FloatArray:
    spectrum = _k(image)
    at = tuple(int(p) for p in np.floor(rng.random(2) * np.array(spectrum.shape)))
    spectrum[at] += np.abs(spectrum).max() * (0.1 + 0.9 * severity)
    return _image(spectrum)


def _rigid(image: FloatArray, degrees: float, shift_px: tuple[float, float]) -> NDArray[np.float64]:
    theta = np.deg2rad(degrees)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    centre = (np.array(image.shape) - 1) / 2.0
    offset = centre - rotation @ centre - np.array(shift_px)
    moved = ndimage.affine_transform(image.astype(np.float64), rotation, offset=offset, order=1)
    return np.asarray(moved, np.float64)


def motion(
    image: FloatArray, severity: float, header: AcquisitionHeader, rng: np.random.Generator
) -> FloatArray:
    axis = _pe_axis(header)
    spacing = np.array(header.pixel_spacing_mm, dtype=np.float64)
    times = np.array([1 / 3, 2 / 3]) + rng.uniform(-0.1, 0.1, 2)
    positions = [image.astype(np.float64)]
    for _ in range(2):
        degrees = rng.uniform(-10, 10) * severity
        shift_mm = rng.uniform(-10, 10, 2) * severity
        shift = (float(shift_mm[0] / spacing[0]), float(shift_mm[1] / spacing[1]))
        positions.append(_rigid(image, degrees, shift))
    spectra = [_k(p) for p in positions]
    centre = int(np.argmax(times > 0.5)) if (times > 0.5).any() else len(times)
    spectra[0], spectra[centre] = spectra[centre], spectra[0]  # the still pose at the centre
    n = spectra[0].shape[axis]
    bounds = [0, *(int(t * n) for t in times), n]
    result = np.empty_like(spectra[0])
    for spectrum, start, end in zip(spectra, bounds[:-1], bounds[1:], strict=True):
        part: list[slice] = [slice(None)] * 2
        part[axis] = slice(start, end)
        result[tuple(part)] = spectrum[tuple(part)]
    return _image(result)


def bias_field(
    image: FloatArray, severity: float, header: AcquisitionHeader, rng: np.random.Generator
) -> FloatArray:
    rows, columns = image.shape
    y, x = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, columns), indexing="ij")
    log_field = np.zeros(image.shape, np.float64)
    for i in range(4):
        for j in range(4 - i):
            log_field += rng.uniform(-0.5, 0.5) * severity * x**i * y**j
    return (image * np.exp(log_field)).astype(np.float32)


def noise(
    image: FloatArray, severity: float, header: AcquisitionHeader, rng: np.random.Generator
) -> FloatArray:
    _, reference = head_and_reference(image[None])  # the head's p99, MISSION.md's reference
    std = 0.25 * severity * float(reference[0])
    return np.abs(image + rng.normal(0.0, std, image.shape)).astype(np.float32)


GENERATORS: dict[
    str, Callable[[FloatArray, float, AcquisitionHeader, np.random.Generator], FloatArray]
] = {
    "motion": motion,
    "ghosting": ghosting,
    "spike": spike,
    "bias_field": bias_field,
    "noise": noise,
}
assert tuple(GENERATORS) == TYPES


def apply(
    image: NDArray[np.floating[Any]],
    artifact: str,
    severity: float,
    header: AcquisitionHeader,
    seed: int,
) -> FloatArray:
    """One TorchIO-style artifact on a 2-D magnitude image; float32 of its shape, ≥ 0."""
    if artifact not in GENERATORS:
        raise ValueError(f"TorchIO makes no {artifact!r}; it makes {', '.join(TYPES)}")
    if not 0.0 <= float(severity) <= 1.0:
        raise ValueError(f"severity must lie in [0, 1], not {severity}")
    img = np.asarray(image, np.float32)
    if img.ndim != 2 or img.shape != (header.rows, header.columns):
        raise ValueError(f"image {img.shape} does not match the header's matrix")
    if float(severity) == 0.0:
        return img.copy()
    out = GENERATORS[artifact](img, float(severity), header, np.random.default_rng(seed))
    return np.maximum(out, 0.0).astype(np.float32)
