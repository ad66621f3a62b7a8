"""LiteRT (TensorFlow Lite) export, float32 or int8, and a LiteRT runtime for the pipeline.

Route: Keras 3's ``model.export(format="litert")``, which traces the model into a SavedModel
(``ExportArchive``) and runs ``tf.lite.TFLiteConverter.from_saved_model`` on it (the converter
does not take Keras 3 models directly). One change is needed first: Keras's ``UpSampling2D``
(nearest, ``ops.repeat``) loses the static channel count when the spatial size is dynamic, and
the LiteRT builtin ``CONV_2D`` needs it (the converter fails with "'tf.Conv2D' op is neither a
custom op nor a flex op", ERROR_NEEDS_FLEX_OPS). :func:`serving_copy` therefore clones the
model with :class:`StaticChannelUpSampling2D` (the same values, a reshape restores the channel
count) and the export keeps builtin ops only — no TensorFlow Select (flex) ops, so the plain
``ai-edge-litert`` runtime runs it without TensorFlow.

The exported model keeps the Keras inputs (``image`` float32 ``(B, H, W, 1)``, ``header`` float32
``(B, 8)``) and outputs (``masks``, ``presence``, ``suitability``) with dynamic batch and spatial
sizes (the interpreter is resized per call).

``int8``: full-integer post-training quantisation (weights and activations int8, float32 inputs
and outputs; ``TFLITE_BUILTINS_INT8`` only, so any op that could not be quantised fails the
export instead of silently staying float). Activation ranges are calibrated on a
representative set: canonical, normalised slices of a ``python -m ml dataset`` directory, or,
without one, slices simulated on the spot (:func:`representative_slices`). An int8 file holds
the network only, without its mask modes (``ml.model.network.MaskMode``): the ``level`` and
``head`` maps read the air's level, ~0.01-0.05 of the head's p99, below what an int8 image
resolves, and a presence ~0.07 off moved a whole slice's noise mask across 0.5 (pruned model,
round 9: 96 % of pixels agreed with the modes quantised). The export names the modes in the
file's sidecar (:data:`PIPELINE_MODES_KEY`) and the pipeline applies them in float32, as it
does for a cut ONNX graph. A float file is exported the same way when the model's sidecar holds
a presence stack (``gpu_ops.scoring.PresenceStack``): the modes must use the stacked presence.

Checks after writing (:func:`compare`): float32 — every output within :data:`TOLERANCE` of Keras
on :func:`ml.model.export.check_inputs`; int8 — on representative slices, mean absolute mask
difference ≤ :data:`INT8_MEAN_TOLERANCE`, presence and suitability within
:data:`INT8_MAX_TOLERANCE`, and the masks thresholded at 0.5 agree on ≥
:data:`INT8_AGREEMENT` of the pixels.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

TOLERANCE = 1e-4
"""float32 export: absolute difference allowed on every output (probabilities)."""
INT8_MEAN_TOLERANCE = 0.02
"""int8 export: mean absolute difference allowed on the mask probabilities."""
INT8_MAX_TOLERANCE = 0.1
"""int8 export: absolute difference allowed on presence and suitability."""
INT8_AGREEMENT = 0.99
"""int8 export: share of mask pixels (thresholded at 0.5) that must agree with Keras."""

PIPELINE_MODES_KEY = "pipeline_modes"
"""Sidecar key (``MODEL.int8.thresholds.json``) of an int8 file: the K mask modes the pipeline
applies to the per-pixel probabilities the file serves."""

Batch = dict[str, NDArray[np.float32]]


class LiteRTModel:
    """A ``.tflite`` file behind the one call the scoring pipeline makes (``predict_on_batch``).

    Uses the ``ai-edge-litert`` interpreter (no TensorFlow import), or TensorFlow's own
    ``tf.lite.Interpreter`` where that package is missing. ``threads``: CPU threads (XNNPACK).
    ``modes``: the mask modes of a file that serves per-pixel probabilities (an int8 export,
    whose sidecar names them under :data:`PIPELINE_MODES_KEY`): :meth:`predict_on_batch`
    applies them in float32 and :meth:`predict_probabilities` leaves them to the pipeline;
    None for a file that applies its own.
    """

    def __init__(
        self, path: str | Path, threads: int = 2, modes: tuple[str, ...] | None = None
    ) -> None:
        self.modes = modes
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # pragma: no cover - the pinned requirements install it
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.runner = self.interpreter.get_signature_runner()

    def predict_on_batch(self, inputs: dict[str, Any]) -> dict[str, NDArray[np.float32]]:
        """``inputs``: ``image`` float32 ``(B, H, W, 1)``, ``header`` float32 ``(B, 8)``; the
        served ``masks`` (:attr:`modes` applied), ``presence``, ``suitability``."""
        out = self._run(inputs)
        if self.modes is not None:
            from gpu_ops.scoring import apply_mask_modes

            image = np.asarray(inputs["image"], np.float32)[..., 0]
            served = apply_mask_modes(
                np.moveaxis(out["masks"], -1, 1), out["presence"], self.modes, image
            )
            out["masks"] = np.moveaxis(served, 1, -1)
        return out

    def predict_probabilities(self, inputs: dict[str, Any]) -> dict[str, NDArray[np.float32]]:
        """The outputs with ``probabilities`` ``(B, K, H, W)`` (channel-first) for ``masks``:
        the per-pixel probabilities before :attr:`modes` (the pipeline applies them)."""
        out = self._run(inputs)
        out["probabilities"] = np.moveaxis(out.pop("masks"), -1, 1)
        return out

    def _run(self, inputs: dict[str, Any]) -> dict[str, NDArray[np.float32]]:
        values = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        out = self.runner(**values)
        return {k: np.asarray(v, np.float32) for k, v in out.items()}


def pipeline_modes(sidecar: dict[str, Any]) -> tuple[str, ...] | None:
    """The modes a ``.tflite`` file's sidecar names for the pipeline to apply, or None (the file
    applies its own); ValueError for a list that is not K known modes."""
    from gpu_ops.scoring import MASK_MODES
    from ml import ARTIFACT_TYPES

    named = sidecar.get(PIPELINE_MODES_KEY)
    if named is None:
        return None
    modes = tuple(str(m) for m in named)
    if len(modes) != len(ARTIFACT_TYPES) or not set(modes) <= set(MASK_MODES):
        raise ValueError(f"{PIPELINE_MODES_KEY} must be {len(ARTIFACT_TYPES)} of {MASK_MODES}")
    return modes


def name_pipeline_modes(out: Path, modes: tuple[str, ...] | None) -> None:
    """Name ``modes`` in the sidecar of the ``.tflite`` file ``out`` (an int8 file's: the
    pipeline applies them), or, None, take any such name out of it (a float file applies its
    own modes: a name left by an earlier int8 export would apply them twice)."""
    import json

    from ml.pipeline import sidecar_path

    path = sidecar_path(out)
    content = json.loads(path.read_text()) if path.is_file() else {}
    if modes is None and PIPELINE_MODES_KEY not in content:
        return
    if modes is None:
        del content[PIPELINE_MODES_KEY]
    else:
        content[PIPELINE_MODES_KEY] = list(modes)
    path.write_text(json.dumps(content, indent=2) + "\n")


def _upsampling_class() -> Any:
    from ml.model.backend import keras as get_keras

    keras = get_keras()

    class StaticChannelUpSampling2D(keras.layers.UpSampling2D):  # type: ignore[misc,name-defined]
        """``UpSampling2D`` whose output keeps a static channel count under dynamic H and W."""

        def call(self, inputs: Any) -> Any:
            out = super().call(inputs)
            shape = keras.ops.shape(inputs)
            return keras.ops.reshape(
                out,
                (shape[0], shape[1] * self.size[0], shape[2] * self.size[1], inputs.shape[-1]),
            )

    return StaticChannelUpSampling2D


def serving_copy(model: Any) -> Any:
    """A clone of ``model`` (same weights, same function) that LiteRT can convert with builtins."""
    from ml.model.backend import keras as get_keras

    keras = get_keras()
    upsampling = _upsampling_class()

    def clone(layer: Any) -> Any:
        if isinstance(layer, keras.layers.UpSampling2D):
            return upsampling.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def representative_slices(
    data_dir: Path | None, count: int = 128, seed: int = 0, working: int | None = None
) -> list[Batch]:
    """``count`` single-slice batches (``image`` ``(1, H, W, 1)`` padded, or on the working grid
    of size ``working``; ``header`` ``(1, 8)``).

    From the ``train`` split of ``data_dir`` (every ``k``-th slice, so all matrices appear), or,
    when ``data_dir`` is None, from a small data set simulated into a temporary directory
    (``python -m ml dataset``'s builder, seeded).
    """
    from ml.model.data import load_split
    from ml.model.preprocess import to_model_grid

    if data_dir is None:
        from ml.data.dataset import build_dataset

        with tempfile.TemporaryDirectory() as tmp:
            # train gets 80 %: ask for enough slices that it holds ``count``.
            build_dataset(Path(tmp), slices_total=int(count / 0.8) + 3, seed=seed, progress=False)
            return representative_slices(Path(tmp), count, seed, working)
    split = load_split(data_dir, "train")
    if not len(split):
        raise ValueError(f"{data_dir} has no train slices for int8 calibration")
    picks = np.linspace(0, len(split) - 1, min(count, len(split))).round().astype(int)
    return [
        {
            "image": to_model_grid(split.images[i][None], working)[..., None],
            "header": split.headers[i : i + 1],
        }
        for i in picks
    ]


def _sidecar_content(path: Path) -> dict[str, Any]:
    import json

    return dict(json.loads(path.read_text())) if path.is_file() else {}


def export_litert(
    model_path: Path,
    out: Path,
    *,
    int8: bool = False,
    data_dir: Path | None = None,
    calibration_slices: int = 128,
) -> dict[str, float]:
    """Write ``out`` (.tflite) from the ``.keras`` model and check it (:func:`compare`).

    Returns the measured differences. Raises ``ValueError`` when they exceed the tolerances.
    """
    from ml.pipeline import sidecar_path

    stacked = bool(_sidecar_content(sidecar_path(model_path)).get("presence_stack"))
    if (int8 or stacked) and sidecar_path(out).resolve() == sidecar_path(model_path).resolve():
        kind = "an int8 file" if int8 else "a file of a model with a presence stack"
        raise ValueError(
            f"{kind} names its mask modes in a sidecar of its own; {out.name} would share "
            f"{sidecar_path(out).name} with {model_path.name}: choose another --out name"
        )
    import tensorflow as tf

    from ml.model import network
    from ml.model.export import check_inputs

    model = network.load(model_path)
    # The pipeline applies the modes itself for an int8 file (see the module docstring) and
    # for a model whose sidecar stacks presence with the k-space (the modes must see the
    # stacked presence, which the graph does not compute).
    raw = int8 or stacked
    modes = tuple(network.mask_modes(model)) if raw else None
    copy = serving_copy(network.with_mask_modes(model, None) if raw else model)
    copy.predict_on_batch(check_inputs())  # Keras exports only a model that has been called
    out.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]},
    }
    samples: list[Batch] = []
    if int8:
        samples = representative_slices(
            data_dir, calibration_slices, working=network.working_size(model)
        )

        def representative() -> Iterator[Batch]:
            yield from samples

        options = {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": representative,
            "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        }
    copy.export(str(out), format="litert", verbose=False, **options)
    try:
        result = compare(model, LiteRTModel(out, modes=modes), samples[:8] if int8 else None)
    except ValueError:
        # A file that failed its check is never left where `ml score --model` would serve it.
        out.unlink(missing_ok=True)
        raise
    name_pipeline_modes(out, modes)
    return result


def compare(model: Any, lite: LiteRTModel, slices: list[Batch] | None = None) -> dict[str, float]:
    """Differences between a Keras model and its LiteRT export; raises ``ValueError`` past the
    tolerances.

    ``slices`` None: the float32 check — largest absolute difference over all outputs on
    :func:`ml.model.export.check_inputs` (``max_abs``). Otherwise the int8 check on those
    batches: ``mask_mean_abs``, ``scores_max_abs`` (presence, suitability) and
    ``mask_agreement`` (share of pixels whose 0.5-thresholded masks agree). The masks compared
    are the served ones (a file with :attr:`LiteRTModel.modes` has them applied in float32).
    """
    from ml.model.export import check_inputs

    if slices is None:
        x = check_inputs()
        expected, got = model.predict_on_batch(x), lite.predict_on_batch(x)
        diff = max(float(np.max(np.abs(np.asarray(expected[k]) - got[k]))) for k in expected)
        if diff > TOLERANCE:
            raise ValueError(f"LiteRT outputs differ from Keras by {diff:.2e} > {TOLERANCE}")
        return {"max_abs": diff}
    mask_abs, agree, pixels, scores = 0.0, 0, 0, 0.0
    for batch in slices:
        expected, got = model.predict_on_batch(batch), lite.predict_on_batch(batch)
        a, b = np.asarray(expected["masks"]), got["masks"]
        mask_abs += float(np.abs(a - b).sum())
        agree += int(((a >= 0.5) == (b >= 0.5)).sum())
        pixels += a.size
        for key in ("presence", "suitability"):
            scores = max(scores, float(np.max(np.abs(np.asarray(expected[key]) - got[key]))))
    result = {
        "mask_mean_abs": mask_abs / pixels,
        "scores_max_abs": scores,
        "mask_agreement": agree / pixels,
    }
    if (
        result["mask_mean_abs"] > INT8_MEAN_TOLERANCE
        or result["scores_max_abs"] > INT8_MAX_TOLERANCE
        or result["mask_agreement"] < INT8_AGREEMENT
    ):
        raise ValueError(f"int8 LiteRT outputs differ from Keras beyond the tolerances: {result}")
    return result
