"""Inference pipeline used by ``python -m ml score`` and the Django scoring workers.

``ScoringPipeline.load(weights)`` loads a saved model once per process (``get_pipeline`` caches
by path); ``score_datasets`` runs preprocess → infer → postprocess on the pydicom datasets of one
series:

- preprocess: ``pixel_array`` × RescaleSlope + RescaleIntercept, the acquisition header
  (:meth:`ml.simulate.AcquisitionHeader.from_dataset`), phase-encode put on array axis 1
  (a ``COL`` slice is transposed), intensities normalised (head p99 = 1), then either resampled
  to the model's working grid (a model trained at a working size: long side of that many
  pixels, :func:`ml.model.preprocess.working_shape`) or zero-padded to a multiple of 16 (a model
  without one: native resolution);
- infer: the Keras model (or an ONNX Runtime session for ``.onnx`` files, a LiteRT interpreter for
  ``.tflite`` ones) in batches of
  :attr:`ScoringPipeline.batch_size`;
- postprocess: mask probabilities resampled back to the slice's grid (bilinear) or the padding
  cropped, ``COL`` slices transposed back, masks thresholded per type
  (``ScoringPipeline.thresholds``: 0.5, or the values tuned on the validation split and stored
  beside the weights as ``NAME.thresholds.json``).

Pre- and post-processing run on the GPU with CuPy where CuPy sees a device (``gpu_ops.scoring``,
the same outputs as NumPy), on NumPy otherwise; ``ScoringPipeline.xp`` says which.

Importing this module does not import Keras; loading a pipeline does.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gpu_ops import cupy_available, optional_import, to_numpy
from gpu_ops.scoring import canonical_batch, normalise_batch, threshold_masks
from ml import ARTIFACT_TYPES
from ml.model.preprocess import from_model_grid, header_vector_from, to_model_grid
from ml.simulate.header import AcquisitionHeader

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED: dict[str, Path] = {
    "full": WEIGHTS_DIR / "artiscan-full.keras",
    "pruned": WEIGHTS_DIR / "artiscan-pruned.keras",
    "full-onnx": WEIGHTS_DIR / "artiscan-full.onnx",
    "pruned-onnx": WEIGHTS_DIR / "artiscan-pruned.onnx",
}
"""The shipped weight files by name; ``None`` or ``"full"`` loads the full Keras model. The
``-onnx`` files are the same weights exported (``python -m ml export``), served by ONNX Runtime
without importing TensorFlow."""


class ScoringError(ValueError):
    """The input cannot be scored (no images, mixed sizes, undecodable pixels)."""


@dataclass(frozen=True)
class ScoreResult:
    """What the model says about one series (S slices, K types, Rows × Columns pixels).

    ``sop_instance_uid`` list of S str in input order; ``classes`` the K canonical type names;
    ``masks`` uint8 ``(S, K, Rows, Columns)`` 0/1 on the original pixel grid; ``presence``
    float32 ``(S, K)`` per-type probability; ``suitability`` float32 ``(S,)`` probability the
    slice is diagnostically suitable (1 = fully diagnostic); ``series_suitability`` the mean of
    ``suitability`` over the slices.
    """

    sop_instance_uid: list[str]
    classes: tuple[str, ...]
    masks: NDArray[np.uint8]
    presence: NDArray[np.float32]
    suitability: NDArray[np.float32]
    series_suitability: float

    def to_npz(self, path: str | Path) -> None:
        """Write the MISSION.md ``OUT.npz`` keys (str arrays, uint8 masks, float32 scores)."""
        np.savez_compressed(
            path,
            sop_instance_uid=np.array(self.sop_instance_uid, dtype=str),
            classes=np.array(self.classes, dtype=str),
            masks=self.masks,
            suitability=self.suitability.astype(np.float32),
            series_suitability=np.float32(self.series_suitability),
        )


def resolve_weights(weights: str | Path | None) -> Path:
    """``None``/``"full"``/``"pruned"`` → the shipped file; anything else is a path."""
    if weights is None:
        return SHIPPED["full"]
    if isinstance(weights, str) and weights in SHIPPED:
        return SHIPPED[weights]
    return Path(weights)


def pixels(ds: Any) -> NDArray[np.float32]:
    """float32 ``(Rows, Columns)``: the stored values × RescaleSlope + RescaleIntercept."""
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises many kinds for broken or unsupported pixel data
        raise ScoringError(f"cannot decode the pixels of {_uid(ds)}: {exc}") from exc
    if arr.ndim != 2:
        raise ScoringError(f"{_uid(ds)} is not a single-frame greyscale image")
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    return np.asarray(arr.astype(np.float32) * slope + intercept, dtype=np.float32)


def _uid(ds: Any) -> str:
    return str(getattr(ds, "SOPInstanceUID", "") or "")


WORKING_SIZE_KEY = "artiscan_working_size"
"""ONNX metadata key (and LiteRT/Keras-independent sidecar key ``working_size``) of a model's
working size."""


def model_working_size(model: Any) -> int | None:
    """The working size a loaded model carries (Keras graph marker, ONNX metadata), or None."""
    if hasattr(model, "working_size"):
        return model.working_size  # type: ignore[no-any-return]
    if hasattr(model, "layers"):
        network = importlib.import_module("ml.model.network")
        return network.working_size(model)  # type: ignore[no-any-return]
    return None


class OnnxModel:
    """An ONNX Runtime session behind the one call the pipeline makes (``predict_on_batch``).

    Loads without TensorFlow: a scoring process that serves an ``.onnx`` file starts in well
    under a second.
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        if threads is None:
            # Several scoring processes on a few cores each take a share (the benchmarks do).
            threads = int(os.environ.get("ARTISCAN_INFERENCE_THREADS", "2"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        size = self.session.get_modelmeta().custom_metadata_map.get(WORKING_SIZE_KEY)
        self.working_size = int(size) if size else None

    def predict_on_batch(self, inputs: dict[str, Any]) -> dict[str, Any]:
        values = self.session.run(self.outputs, {k: np.asarray(v) for k, v in inputs.items()})
        return dict(zip(self.outputs, values, strict=True))


class ScoringPipeline:
    """A loaded model plus its pre- and post-processing (see the module docstring)."""

    batch_size = 8
    threshold = 0.5
    """Default mask threshold; ``MODEL.thresholds.json`` beside the weights sets one per type
    (``self.thresholds``, float32 (K,))."""

    def __init__(self, model: Any, weights: Path | None, device: str | None = None) -> None:
        """``device``: ``"cupy"`` or ``"numpy"`` for the pre/post-processing; None picks CuPy
        when it sees a GPU."""
        self.model = model
        self.weights = weights
        if device is None:
            device = "cupy" if cupy_available() else "numpy"
        self.xp: Any = optional_import("cupy")[0] if device == "cupy" else np
        self.thresholds = np.full(len(ARTIFACT_TYPES), self.threshold, np.float32)
        self.working_size: int | None = model_working_size(model)
        """Long side of the working grid the model runs at; None = native resolution."""
        if weights is not None:
            # Per-type thresholds tuned on the validation split, when the weights have them.
            sidecar = weights.with_name(weights.name.rsplit(".", 1)[0] + ".thresholds.json")
            if sidecar.is_file():
                content = json.loads(sidecar.read_text())
                values = content["thresholds"]
                self.thresholds = np.array([values[n] for n in ARTIFACT_TYPES], np.float32)
                if content.get("working_size") is not None:
                    self.working_size = int(content["working_size"])

    @classmethod
    def load(cls, weights: str | Path | None = None) -> ScoringPipeline:
        """Load ``weights``: a ``.keras``/``.onnx``/``.tflite`` path, a name of :data:`SHIPPED`
        or None."""
        path = resolve_weights(weights)
        if not path.is_file():
            raise FileNotFoundError(f"no model weights at {path}")
        if path.suffix == ".onnx":
            return cls(OnnxModel(path), path)
        if path.suffix == ".tflite":  # python -m ml export MODEL --format litert [--int8]
            litert = importlib.import_module("ml.model.litert")
            threads = int(os.environ.get("ARTISCAN_INFERENCE_THREADS", "2"))
            return cls(litert.LiteRTModel(path, threads=threads), path)
        # Imported by name at call time: the web side imports this module for its types and
        # must never reach Keras (the import contract follows static imports, even lazy ones).
        network = importlib.import_module("ml.model.network")
        return cls(network.load(path), path)

    def _batches(
        self, images: NDArray[np.float32], headers: NDArray[np.float32]
    ) -> Iterator[tuple[slice, dict[str, NDArray[np.float32]]]]:
        """The model's outputs batch by batch: ``(slice of the input, {masks, presence,
        suitability})`` with the shapes of :meth:`infer`."""
        for start in range(0, len(images), self.batch_size):
            stop = min(start + self.batch_size, len(images))
            out = self.model.predict_on_batch(
                {"image": images[start:stop, :, :, None], "header": headers[start:stop]}
            )
            yield (
                slice(start, stop),
                {
                    "masks": np.asarray(out["masks"], np.float32),
                    "presence": np.asarray(out["presence"], np.float32),
                    "suitability": np.asarray(out["suitability"], np.float32)[:, 0],
                },
            )

    def infer(
        self, images: NDArray[np.float32], headers: NDArray[np.float32]
    ) -> dict[str, NDArray[np.float32]]:
        """Run the model on canonical, normalised ``images`` float32 ``(S, H, W)`` already on
        its input grid (padded to multiples of 16, or the working grid of a model that has a
        :attr:`working_size`; :meth:`score_arrays` does both ways).

        ``headers`` float32 ``(S, 8)``. Returns ``masks`` ``(S, H, W, K)``, ``presence``
        ``(S, K)``, ``suitability`` ``(S,)``, float32 probabilities.
        """
        parts: dict[str, list[NDArray[np.float32]]] = {"masks": [], "presence": [], "suit": []}
        for _, out in self._batches(images, headers):
            parts["masks"].append(out["masks"])
            parts["presence"].append(out["presence"])
            parts["suit"].append(out["suitability"])
        return {
            "masks": np.concatenate(parts["masks"]),
            "presence": np.concatenate(parts["presence"]),
            "suitability": np.concatenate(parts["suit"]),
        }

    def score_arrays(
        self, images: list[NDArray[Any]], headers: list[AcquisitionHeader]
    ) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.float32]]:
        """Score slices given as arrays: ``images[i]`` ``(Rows, Columns)`` in stored units.

        All slices must share one shape. Returns masks uint8 ``(S, K, Rows, Columns)``,
        presence float32 ``(S, K)`` and suitability float32 ``(S,)``.
        """
        if not images:
            raise ScoringError("no slices to score")
        shapes = {tuple(np.shape(im)) for im in images}
        if len(shapes) != 1:
            raise ScoringError(f"slices of different sizes: {sorted(shapes)}")
        rows, cols = next(iter(shapes))
        n = len(images)
        masks = np.zeros((n, len(ARTIFACT_TYPES), rows, cols), np.uint8)
        presence = np.zeros((n, len(ARTIFACT_TYPES)), np.float32)
        suitability = np.zeros(n, np.float32)
        xp = self.xp
        # Slices of one phase-encode direction share a canonical shape: one batch stream each.
        for pe in ("ROW", "COL"):
            picked = [i for i, h in enumerate(headers) if h.phase_encode == pe]
            if not picked:
                continue
            stack = xp.asarray(np.stack([np.asarray(images[i], np.float32) for i in picked]))
            batch = normalise_batch(canonical_batch(stack, pe))
            crows, ccols = batch.shape[1:]
            vectors = np.stack([header_vector_from(headers[i]) for i in picked])
            # Thresholded batch by batch: the float masks of a whole series (S x H x W x K) are
            # never held at once.
            net_input = to_numpy(to_model_grid(batch, self.working_size))
            for part, out in self._batches(net_input, vectors):
                rows_of = picked[part]
                probs = from_model_grid(xp.asarray(out["masks"]), crows, ccols, self.working_size)
                binary = threshold_masks(probs, crows, ccols, self.thresholds)
                masks[rows_of] = to_numpy(canonical_batch(binary, pe))  # (s, K, rows, cols)
                presence[rows_of] = out["presence"]
                suitability[rows_of] = out["suitability"]
        return masks, presence, suitability

    def score_datasets(self, datasets: list[Any]) -> ScoreResult:
        """Score the pydicom datasets of one series, in the order given."""
        if not datasets:
            raise ScoringError("no DICOM images to score")
        images = [pixels(ds) for ds in datasets]
        try:
            headers = [AcquisitionHeader.from_dataset(ds) for ds in datasets]
        except (AttributeError, TypeError, ValueError) as exc:
            raise ScoringError(f"unusable acquisition header: {exc}") from exc
        masks, presence, suitability = self.score_arrays(images, headers)
        return ScoreResult(
            sop_instance_uid=[_uid(ds) for ds in datasets],
            classes=ARTIFACT_TYPES,
            masks=masks,
            presence=presence,
            suitability=suitability,
            series_suitability=float(np.mean(suitability)),
        )

    def score_series_dir(self, path: str | Path) -> ScoreResult:
        """Score the DICOM files of one series folder, sorted by InstanceNumber then position."""
        from ml.cli.simulate import SeriesError, read_series

        try:
            datasets = read_series(Path(path))
        except SeriesError as exc:
            raise ScoringError(str(exc)) from exc
        return self.score_datasets(datasets)


_CACHE: dict[Path, ScoringPipeline] = {}
_LOCK = threading.Lock()


def get_pipeline(weights: str | Path | None = None) -> ScoringPipeline:
    """The process-wide pipeline for ``weights`` (loaded on first use, then reused)."""
    path = resolve_weights(weights).resolve()
    with _LOCK:
        if path not in _CACHE:
            _CACHE[path] = ScoringPipeline.load(path)
        return _CACHE[path]
