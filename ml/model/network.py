"""The multi-task U-Net (Keras 3, ``keras.ops`` only) and its losses.

Inputs: ``image`` float32 ``(B, H, W, 1)`` in canonical orientation (phase-encode along axis 2 of
the batch, i.e. the slice's axis 1), normalised (:func:`ml.model.preprocess.normalise`), ``H`` and
``W`` multiples of 16; ``header`` float32 ``(B, 8)`` (:func:`ml.model.preprocess.header_vector`).
Outputs (a dict): ``masks`` float32 ``(B, H, W, 10)`` per-pixel probabilities, ``presence``
float32 ``(B, 10)`` per-type probabilities, ``suitability`` float32 ``(B, 1)`` probability that the
slice is diagnostically suitable.

Architecture: ``depth`` levels of two 3x3 conv + batch-norm + ReLU blocks with 2x max-pooling,
a bottleneck, and a decoder of 2x upsampling + 3x3 conv, concatenation with the skip, and two
conv blocks. The header enters through FiLM (Perez et al. 2018): a small MLP of the header gives a
per-channel scale and shift after the bottleneck and after every decoder level. Presence and
suitability come from global average pooling of the (FiLM-ed) bottleneck plus the global max and
mean of the mask logits/probabilities. Every conv width is a named entry of ``widths``, so the
pruner can build thinner copies (:mod:`ml.model.prune`).
"""

from __future__ import annotations

import math
from typing import Any

from gpu_ops.scoring import (
    IMAGE_MAPS,
    LEVEL_AIR_BIAS,
    LEVEL_BLOCK,
    LEVEL_FULL,
    LEVEL_HEAD,
    LEVEL_HEAD_OVER_AIR,
    LEVEL_INSIDE,
    LINE_HALF_WIDTH,
    LINE_LEVEL,
    LINE_OFFSETS,
    MASK_MODES,
)
from ml import ARTIFACT_TYPES
from ml.model.backend import keras as _keras
from ml.model.preprocess import HEADER_FEATURES

keras = _keras()
ops = keras.ops

N_TYPES = len(ARTIFACT_TYPES)
HEADER_HIDDEN = 32


def conv_names(depth: int) -> list[str]:
    """Names of the prunable 3x3 convolutions, encoder to decoder."""
    names = [f"enc{level}{ab}" for level in range(depth) for ab in "ab"]
    names += ["botta", "bottb"]
    for level in reversed(range(depth)):
        names += [f"up{level}", f"dec{level}a", f"dec{level}b"]
    return names


def film_targets(depth: int) -> list[str]:
    """Convolutions whose output is modulated by FiLM."""
    return ["bottb", *[f"dec{level}b" for level in reversed(range(depth))]]


def conv_inputs(name: str, depth: int) -> list[str]:
    """Which layers' outputs, concatenated in this order, feed conv ``name`` ("image" = input)."""
    if name == "enc0a":
        return ["image"]
    if name.startswith("enc"):
        level, ab = int(name[3:-1]), name[-1]
        return [f"enc{level}a"] if ab == "b" else [f"enc{level - 1}b"]
    if name == "botta":
        return [f"enc{depth - 1}b"]
    if name == "bottb":
        return ["botta"]
    if name.startswith("up"):
        level = int(name[2:])
        return ["bottb"] if level == depth - 1 else [f"dec{level + 1}b"]
    level, ab = int(name[3:-1]), name[-1]
    return [f"up{level}", f"enc{level}b"] if ab == "a" else [f"dec{level}a"]


def default_widths(base: int = 8, depth: int = 4) -> dict[str, int]:
    """Widths of a plain U-Net: ``base·2^level`` per level, ``base·2^depth`` at the bottleneck."""
    widths: dict[str, int] = {}
    for name in conv_names(depth):
        if name.startswith("bott"):
            widths[name] = base * 2**depth
        else:
            widths[name] = base * 2 ** int(name[3:-1] if name[0] in "ed" else name[2:])
    return widths


@keras.saving.register_keras_serializable(package="artiscan")
class FiLM(keras.layers.Layer):  # type: ignore[misc,name-defined]
    """Feature-wise linear modulation: ``x · (1 + γ) + β`` with ``[γ, β] = Dense(h)``.

    Inputs ``[x (B, H, W, C), h (B, F)]``; output like ``x``. The dense layer starts at zero, so
    an untrained FiLM is the identity.
    """

    def __init__(self, channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.dense = keras.layers.Dense(
            2 * self.channels, kernel_initializer="zeros", name=f"{self.name}_dense"
        )

    def build(self, input_shape: Any) -> None:
        self.dense.build(input_shape[1])
        self.built = True

    def call(self, inputs: Any) -> Any:
        x, h = inputs
        gb = self.dense(h)
        gamma = ops.expand_dims(ops.expand_dims(gb[:, : self.channels], 1), 1)
        beta = ops.expand_dims(ops.expand_dims(gb[:, self.channels :], 1), 1)
        return x * (1.0 + gamma) + beta

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update({"channels": self.channels})
        return config


def _block(x: Any, name: str, width: int) -> Any:
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_model(widths: dict[str, int] | None = None, depth: int = 4) -> Any:
    """The multi-task U-Net (see the module docstring); ``widths`` default to base 8."""
    widths = dict(widths or default_widths(8, depth))
    image = keras.Input((None, None, 1), name="image")
    header = keras.Input((len(HEADER_FEATURES),), name="header")
    h = keras.layers.Dense(HEADER_HIDDEN, activation="relu", name="header_mlp")(header)
    skips: dict[int, Any] = {}
    x = image
    for level in range(depth):
        x = _block(x, f"enc{level}a", widths[f"enc{level}a"])
        x = _block(x, f"enc{level}b", widths[f"enc{level}b"])
        skips[level] = x
        x = keras.layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _block(x, "botta", widths["botta"])
    x = _block(x, "bottb", widths["bottb"])
    bottleneck = FiLM(widths["bottb"], name="film_bottb")([x, h])
    x = bottleneck
    for level in reversed(range(depth)):
        x = keras.layers.UpSampling2D(2, name=f"upsample{level}")(x)
        x = _block(x, f"up{level}", widths[f"up{level}"])
        x = keras.layers.Concatenate(name=f"concat{level}")([x, skips[level]])
        x = _block(x, f"dec{level}a", widths[f"dec{level}a"])
        x = _block(x, f"dec{level}b", widths[f"dec{level}b"])
        x = FiLM(widths[f"dec{level}b"], name=f"film_dec{level}b")([x, h])
    logits = keras.layers.Conv2D(
        N_TYPES,
        1,
        name="mask_logits",
        bias_initializer=keras.initializers.Constant(MASK_PRIOR_LOGIT),
    )(x)
    masks = keras.layers.Activation("sigmoid", name="masks")(logits)
    pooled = keras.layers.Concatenate(name="pooled")(
        [
            keras.layers.GlobalAveragePooling2D(name="gap_bottleneck")(bottleneck),
            keras.layers.GlobalMaxPooling2D(name="gmp_logits")(logits),
            keras.layers.GlobalAveragePooling2D(name="gap_masks")(masks),
        ]
    )
    presence = keras.layers.Dense(N_TYPES, activation="sigmoid", name="presence")(pooled)
    suitability = keras.layers.Dense(1, activation="sigmoid", name="suitability")(pooled)
    return keras.Model(
        inputs={"image": image, "header": header},
        outputs={"masks": masks, "presence": presence, "suitability": suitability},
        name="artiscan_unet",
    )


MASK_PRIOR_LOGIT = math.log(0.01 / 0.99)
"""Initial bias of every mask logit: a fresh network starts at probability 0.01 per pixel, near
the pixel prevalence of the types, not 0.5 (Lin et al. 2017, "Focal loss for dense object
detection": the prior keeps the flood of background pixels from driving the rare types' channels
into saturation in the first steps)."""


def _shifted_ops(x: Any, d: int, axis: int) -> Any:
    """``x`` moved so that index ``i`` holds ``x[i + d]`` along ``axis`` (1 or 2), the edge
    repeated: :func:`gpu_ops.scoring._shifted` in graph ops (slices and a concatenation)."""

    def part(start: int | None, stop: int | None) -> Any:
        index = [slice(None)] * len(x.shape)
        index[axis] = slice(start, stop)
        return x[tuple(index)]

    if d > 0:
        return ops.concatenate([part(d, None)] + [part(-1, None)] * d, axis=axis)
    if d < 0:
        return ops.concatenate([part(None, 1)] * -d + [part(None, d)], axis=axis)
    return x


def line_map_ops(image: Any) -> Any:
    """:func:`gpu_ops.scoring.line_map` in graph ops: ``image (B, H, W, 1)`` → ``(B, H, W, 1)``."""
    shifts = [d for o in LINE_OFFSETS for d in (-o, o)]
    rows = ops.mean(image, axis=2, keepdims=True)  # (B, H, 1, 1)
    total = _shifted_ops(rows, shifts[0], 1)
    for d in shifts[1:]:
        total = total + _shifted_ops(rows, d, 1)
    standing = rows - total / float(len(shifts))
    peak = ops.cast(
        ops.greater_equal(standing, ops.max(standing, axis=1, keepdims=True)), image.dtype
    )
    total2d = _shifted_ops(image, shifts[0], 1)
    for d in shifts[1:]:
        total2d = total2d + _shifted_ops(image, d, 1)
    residual = ops.abs(image - total2d / float(len(shifts)))
    residual = (_shifted_ops(residual, -1, 2) + residual + _shifted_ops(residual, 1, 2)) / 3.0
    along = ops.sum(peak * residual, axis=1, keepdims=True)  # (B, 1, W, 1)
    band = peak
    for d in range(1, LINE_HALF_WIDTH + 1):
        band = ops.maximum(band, ops.maximum(_shifted_ops(peak, -d, 1), _shifted_ops(peak, d, 1)))
    return band * ops.clip(along / LINE_LEVEL, 0.0, 1.0)


def _filled_ops(above: Any, axis: int) -> Any:
    """:func:`gpu_ops.scoring._filled` in graph ops (``above`` 0/1 float)."""
    before = ops.cumsum(above, axis=axis)
    after = ops.sum(above, axis=axis, keepdims=True) - before + above
    return ops.cast(ops.greater(before, 0.0), above.dtype) * ops.cast(
        ops.greater(after, 0.0), above.dtype
    )


def _air_and_head_ops(image: Any) -> tuple[Any, Any]:
    """:func:`gpu_ops.scoring._air_and_head` in graph ops: the least block mean ``(B, 1, 1, 1)``
    and the filled head ``(B, H, W, 1)``. H and W are multiples of
    :data:`~gpu_ops.scoring.LEVEL_BLOCK` on the network's grid (a multiple of the stride, 16)."""
    b = LEVEL_BLOCK
    blocks = ops.average_pool(image, pool_size=b, strides=b, padding="valid")
    least = ops.min(blocks, axis=(1, 2, 3), keepdims=True)
    above = ops.cast(
        ops.greater(blocks, ops.maximum(LEVEL_HEAD, LEVEL_HEAD_OVER_AIR * least)), image.dtype
    )
    head = _filled_ops(above, 1) * _filled_ops(above, 2)
    return least, ops.repeat(ops.repeat(head, b, axis=1), b, axis=2)


def level_map_ops(image: Any) -> Any:
    """:func:`gpu_ops.scoring.level_map` in graph ops: ``image (B, H, W, 1)`` → ``(B, H, W, 1)``."""
    least, head = _air_and_head_ops(image)
    level = least * LEVEL_AIR_BIAS * (1.0 - (1.0 - LEVEL_INSIDE) * head)
    return ops.clip(level / LEVEL_FULL, 0.0, 1.0)


def head_map_ops(image: Any) -> Any:
    """:func:`gpu_ops.scoring.head_map` in graph ops: ``image (B, H, W, 1)`` → ``(B, H, W, 1)``."""
    return _air_and_head_ops(image)[1]


IMAGE_MAP_OPS = {"line": line_map_ops, "level": level_map_ops, "head": head_map_ops}
""":data:`gpu_ops.scoring.IMAGE_MAPS` in graph ops, in the same order (line first: files exported
before the level mode have their modes read from its selector constants)."""


@keras.saving.register_keras_serializable(package="artiscan")
class MaskMode(keras.layers.Layer):  # type: ignore[misc,name-defined]
    """Per-type choice of :data:`MASK_MODES`; inputs ``[masks (B, H, W, K), presence (B, K)]``,
    plus the network's input ``image (B, H, W, 1)`` when a type's mode is one of
    :data:`gpu_ops.scoring.IMAGE_MAPS` (line, level, head).

    Output like ``masks``. No weights: the modes are configuration, tuned on the validation split
    (:func:`ml.model.evaluate.tune_thresholds`) and saved with the model, so every runtime
    (Keras, ONNX, LiteRT) serves the same masks.
    """

    def __init__(self, modes: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        unknown = set(modes) - set(MASK_MODES)
        if len(modes) != N_TYPES or unknown:
            raise ValueError(f"need {N_TYPES} modes out of {MASK_MODES}, got {modes}")
        self.modes = [str(m) for m in modes]

    def call(self, inputs: Any) -> Any:
        masks, presence = inputs[0], inputs[1]
        pick = {m: [1.0 if mode == m else 0.0 for mode in self.modes] for m in MASK_MODES}
        p = ops.expand_dims(ops.expand_dims(presence, 1), 1)
        # The three selectors first, in this order (the ONNX reader finds them by name).
        served = (
            masks * ops.convert_to_tensor(pick["pixel"], dtype=masks.dtype)
            + masks * p * ops.convert_to_tensor(pick["gated"], dtype=masks.dtype)
            + ops.ones_like(masks) * p * ops.convert_to_tensor(pick["whole"], dtype=masks.dtype)
        )
        used = [m for m in IMAGE_MAP_OPS if m in self.modes]
        if not used:
            return served
        if len(inputs) < 3:
            raise ValueError(f"the {', '.join(used)} mask modes need the network's input image")
        for m in used:
            image_map = IMAGE_MAP_OPS[m](inputs[2])
            served = served + image_map * p * ops.convert_to_tensor(pick[m], dtype=masks.dtype)
        return served

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update({"modes": self.modes})
        return config


WORKING_LAYER = "working_size"


@keras.saving.register_keras_serializable(package="artiscan")
class WorkingSize(keras.layers.Layer):  # type: ignore[misc,name-defined]
    """The identity on ``suitability``, carrying the model's working size in its config.

    A model with this layer was trained on whole slices resampled to a working grid whose long
    side is ``size`` pixels (:func:`ml.model.preprocess.working_shape`); every consumer resamples
    its input there and the mask probabilities back (:func:`working_size`). No weights.
    """

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, inputs: Any) -> Any:
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update({"size": self.size})
        return config


def working_size(model: Any) -> int | None:
    """The model's working size (long side in pixels), or None: it runs at native resolution."""
    layer = next((x for x in model.layers if isinstance(x, WorkingSize)), None)
    return None if layer is None else int(layer.size)


@keras.saving.register_keras_serializable(package="artiscan")
class SuitabilityCalibration(keras.layers.Layer):  # type: ignore[misc,name-defined]
    """Platt scaling of ``suitability``: ``sigmoid(a · logit(p) + b)``, ``a > 0``, so the ranking
    (ROC AUC) is unchanged and only the probabilities move. No weights: ``a`` and ``b`` are
    configuration fitted on the validation split (:func:`ml.model.evaluate.fit_platt`)."""

    def __init__(self, a: float, b: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not float(a) > 0:
            raise ValueError(f"Platt scale must be positive, got {a}")
        self.a, self.b = float(a), float(b)

    def call(self, inputs: Any) -> Any:
        p = ops.clip(inputs, 1e-6, 1.0 - 1e-6)
        return ops.sigmoid(self.a * (ops.log(p) - ops.log(1.0 - p)) + self.b)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update({"a": self.a, "b": self.b})
        return config


def suitability_calibration(model: Any) -> tuple[float, float] | None:
    """The model's Platt ``(a, b)`` for suitability, or None (the raw output is served)."""
    layer = next((x for x in model.layers if isinstance(x, SuitabilityCalibration)), None)
    return None if layer is None else (layer.a, layer.b)


def _outputs(
    model: Any,
    modes: list[str] | None,
    size: int | None,
    calibration: tuple[float, float] | None,
) -> dict[str, Any]:
    outputs = {
        "masks": model.get_layer("masks").output,
        "presence": model.get_layer("presence").output,
        "suitability": model.get_layer("suitability").output,
    }
    if modes is not None and any(m != "pixel" for m in modes):
        inputs = [outputs["masks"], outputs["presence"]]
        if any(m in IMAGE_MAPS for m in modes):
            inputs.append(model.input["image"])
        outputs["masks"] = MaskMode(list(modes), name="mask_mode")(inputs)
    if calibration is not None:
        outputs["suitability"] = SuitabilityCalibration(*calibration, name="suitability_platt")(
            outputs["suitability"]
        )
    if size is not None:
        outputs["suitability"] = WorkingSize(size, name=WORKING_LAYER)(outputs["suitability"])
    return outputs


def _rebuilt(model: Any, outputs: dict[str, Any]) -> Any:
    return keras.Model(inputs=model.input, outputs=outputs, name=model.name)


def with_working_size(model: Any, size: int | None) -> Any:
    """The same network (shared layers and weights, same mask modes and calibration) marked
    with working size ``size`` (None: native resolution, no marker)."""
    if size == working_size(model):
        return model
    calibration = suitability_calibration(model)
    return _rebuilt(model, _outputs(model, mask_modes(model), size, calibration))


def with_calibration(model: Any, calibration: tuple[float, float] | None) -> Any:
    """The same network serving suitability through Platt ``(a, b)`` (None: the raw output)."""
    outputs = _outputs(model, mask_modes(model), working_size(model), calibration)
    return _rebuilt(model, outputs)


def mask_modes(model: Any) -> list[str]:
    """The model's per-type mask modes (all ``pixel`` when it has no :class:`MaskMode`)."""
    layer = next((x for x in model.layers if isinstance(x, MaskMode)), None)
    return list(layer.modes) if layer is not None else ["pixel"] * N_TYPES


def with_mask_modes(model: Any, modes: list[str] | None) -> Any:
    """The same network (shared layers and weights) serving ``modes``; None or all ``pixel``:
    the plain network, which is what training and pruning start from. The working size and
    the suitability calibration (if any) are kept."""
    outputs = _outputs(model, modes, working_size(model), suitability_calibration(model))
    return _rebuilt(model, outputs)


def reset_mask_channels(model: Any, types: list[str], seed: int = 0) -> None:
    """Start the mask channels of ``types`` afresh, in place: their column of the ``mask_logits``
    1x1 kernel drawn again (Glorot uniform, seeded) and their bias at :data:`MASK_PRIOR_LOGIT`.

    For fine-tuning a model whose channel for a type died (logits tens below zero everywhere: no
    gradient reaches it through a saturated sigmoid within any fine-tune's reach); the other
    channels and every other layer keep their weights.
    """
    unknown = sorted(set(types) - set(ARTIFACT_TYPES))
    if unknown:
        raise ValueError(f"unknown artifact types {unknown}; known: {list(ARTIFACT_TYPES)}")
    import numpy as np

    layer = model.get_layer("mask_logits")
    kernel, bias = (np.array(w) for w in layer.get_weights())
    fan_in, fan_out = kernel.shape[-2], kernel.shape[-1]
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    rng = np.random.default_rng(seed)
    for name in types:
        k = ARTIFACT_TYPES.index(name)
        kernel[..., k] = rng.uniform(-limit, limit, kernel[..., k].shape)
        bias[k] = MASK_PRIOR_LOGIT
    layer.set_weights([kernel, bias])


def model_widths(model: Any) -> dict[str, int]:
    """The conv widths of a built model (the inverse of :func:`build_model`'s ``widths``)."""
    depth = model_depth(model)
    return {name: int(model.get_layer(name).filters) for name in conv_names(depth)}


def model_depth(model: Any) -> int:
    """Number of pooling levels of a built model."""
    return sum(1 for layer in model.layers if layer.name[4:].isdigit() and layer.name[:4] == "pool")


@keras.saving.register_keras_serializable(package="artiscan")
class MaskLoss(keras.losses.Loss):  # type: ignore[misc,name-defined]
    """Per-pixel BCE plus class-weighted soft Dice over ``(B, H, W, K)`` probabilities.

    ``class_weights`` (K,) weight each type's Dice term (rare types count more: class balancing);
    Dice is computed per type over the whole batch, so a batch without the type scores ~0 for
    an empty prediction (smooth 1).
    """

    def __init__(
        self,
        class_weights: list[float] | None = None,
        dice_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", "mask_loss")
        super().__init__(**kwargs)
        self.class_weights = [float(w) for w in (class_weights or [1.0] * N_TYPES)]
        self.dice_weight = float(dice_weight)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        # BCE in logit space, on the logits read back from the sigmoid's output: its gradient
        # with respect to a logit stays sigmoid(z) - t however far the channel has saturated.
        # A clipped probability (the loss until round 4 clipped at 1e-6) has no gradient once
        # the output is below the clip, so a type whose channel fell there early never learnt
        # again: the round-3 model's zipper channel is below 1e-3 on every validation slice.
        # The floors only keep log() finite (float32 sigmoid(z) reaches 1e-37 at z = -85).
        logits = ops.log(ops.maximum(y_pred, 1e-37)) - ops.log(ops.maximum(1.0 - y_pred, 1e-7))
        bce = ops.mean(ops.softplus(logits) - y_true * logits)
        inter = ops.sum(y_true * y_pred, axis=(0, 1, 2))
        total = ops.sum(y_true, axis=(0, 1, 2)) + ops.sum(y_pred, axis=(0, 1, 2))
        dice = 1.0 - (2.0 * inter + 1.0) / (total + 1.0)
        weights = ops.convert_to_tensor(self.class_weights, dtype="float32")
        dice_term = ops.sum(dice * weights) / ops.sum(weights)
        return bce + self.dice_weight * dice_term

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class_weights": self.class_weights,
            "dice_weight": self.dice_weight,
        }


def compile_model(model: Any, class_weights: list[float], learning_rate: float = 2e-3) -> None:
    """Adam, :class:`MaskLoss` for masks, BCE for presence and suitability."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={
            "masks": MaskLoss(class_weights),
            "presence": keras.losses.BinaryCrossentropy(),
            "suitability": keras.losses.BinaryCrossentropy(),
        },
        loss_weights={"masks": 1.0, "presence": 0.3, "suitability": 0.5},
    )


def load(path: str | Any) -> Any:
    """Load a saved ``.keras`` model without its optimizer state."""
    return keras.saving.load_model(str(path), compile=False)


def save_for_serving(source: Any, path: Any) -> int:
    """Write ``source`` (a ``.keras`` path or a model) to ``path`` without optimizer state.

    Returns the parameter count. The file is what ``ScoringPipeline.load`` reads.
    """
    import tempfile
    from pathlib import Path

    if not isinstance(source, str | Path):
        with tempfile.TemporaryDirectory() as tmp:
            source.save(Path(tmp) / "model.keras")
            return save_for_serving(Path(tmp) / "model.keras", path)
    model = load(source)
    model.save(str(path))
    return int(model.count_params())
