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
- postprocess: the per-type mask modes applied (``gpu_ops.scoring.MASK_MODES``: in the graph,
  or here for an ONNX file served up to its per-pixel probabilities, see :class:`OnnxModel`, and
  for an int8 LiteRT file, ``ml.model.litert``), mask
  probabilities resampled back to the slice's grid (bilinear) or the padding cropped, masks
  thresholded per type (``ScoringPipeline.thresholds``: 0.5, or the values tuned on the
  validation split and stored beside the weights as ``NAME.thresholds.json``), ``COL`` slices
  transposed back.

Pre- and post-processing run on the GPU with CuPy where CuPy sees a device (``gpu_ops.scoring``,
the same outputs as NumPy), on NumPy otherwise; ``ScoringPipeline.xp`` says which.

Importing this module does not import Keras; loading a pipeline does.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import threading
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, overload

import numpy as np
from numpy.typing import NDArray

from gpu_ops import cupy_available, optional_import, to_numpy
from gpu_ops.scoring import (
    IMAGE_MAPS,
    MASK_MODES,
    PresenceStack,
    apply_mask_modes,
    canonical_batch,
    kspace_features,
    normalise_batch,
    serve_masks,
)
from ml import ARTIFACT_TYPES
from ml.header import AcquisitionHeader, frame_count, frame_values
from ml.model.preprocess import header_vector_from, to_model_grid, upsample_probabilities

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED: dict[str, Path] = {
    "full": WEIGHTS_DIR / "artiscan-full.keras",
    "pruned": WEIGHTS_DIR / "artiscan-pruned.keras",
    "full-onnx": WEIGHTS_DIR / "artiscan-full.onnx",
    "pruned-onnx": WEIGHTS_DIR / "artiscan-pruned.onnx",
}
"""The shipped weight files by name; ``None`` or ``"full"`` loads the full Keras model. The
``-onnx`` files are the same weights exported (``python -m ml export``), served by ONNX Runtime
without importing TensorFlow (``python -m ml score`` serves ``full`` and ``pruned`` that way
where ONNX Runtime is installed, see :func:`fast_runtime`)."""


def fast_runtime(weights: str) -> str:
    """The shipped name that serves ``weights`` fastest here: ``full``/``pruned`` → their ONNX
    export where ONNX Runtime is installed (a cold process starts without TensorFlow, whose
    import alone takes ~3 s on 2 cores); anything else, or without ONNX Runtime, unchanged. On
    a GPU host with Keras on JAX (``KERAS_BACKEND=jax`` and a GPU CuPy sees) the Keras file stays:
    it runs on the GPU and keeps its outputs there (0.12 s for 32 slices of 384×512 on an H200,
    where ONNX Runtime's CPU build runs on the host's cores)."""
    onnx_name = f"{weights}-onnx"
    if onnx_name not in SHIPPED or not SHIPPED[onnx_name].is_file():
        return weights
    if os.environ.get("KERAS_BACKEND") == "jax" and cupy_available():
        return weights
    import importlib.util

    return onnx_name if importlib.util.find_spec("onnxruntime") is not None else weights


logger = logging.getLogger(__name__)


class ScoringError(ValueError):
    """The input cannot be scored (no images, mixed sizes, undecodable pixels)."""


class InputRefused(ScoringError):
    """This image cannot be scored whatever the attempt, by what it is: a multi-frame image where
    one frame is asked for, colour, per-frame groups that do not match its frames, an unusable
    acquisition header. The scoring workers quarantine such a slice at once instead of trying
    it again (an undecodable one is tried again: another worker may have the decoder)."""


NPZ_COMPRESSLEVEL = 1
"""zlib level of ``OUT.npz``: binary masks are mostly runs of zeros, which level 1 packs nearly
as well as the default 6 at about half the CPU time (measured on 32 × 10 × 384 × 512)."""


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
        """Write the MISSION.md ``OUT.npz`` keys (str arrays, uint8 masks, float32 scores).

        The file is what ``numpy.savez_compressed`` writes (one deflated ``.npy`` member per
        key, read back by ``numpy.load``; ``.npz`` appended to a path without it), at zlib
        level :data:`NPZ_COMPRESSLEVEL`.
        """
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        arrays = {
            "sop_instance_uid": np.array(self.sop_instance_uid, dtype=str),
            "classes": np.array(self.classes, dtype=str),
            "masks": self.masks,
            "suitability": self.suitability.astype(np.float32),
            "series_suitability": np.asarray(np.float32(self.series_suitability)),
        }
        with zipfile.ZipFile(
            path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=NPZ_COMPRESSLEVEL
        ) as archive:
            for key, value in arrays.items():
                with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def resolve_weights(weights: str | Path | None) -> Path:
    """``None``/``"full"``/``"pruned"`` → the shipped file; anything else is a path."""
    if weights is None:
        return SHIPPED["full"]
    if isinstance(weights, str) and weights in SHIPPED:
        return SHIPPED[weights]
    return Path(weights)


def pixels(ds: Any) -> NDArray[np.float32]:
    """float32 ``(Rows, Columns)`` of a single-frame image: the stored values × RescaleSlope +
    RescaleIntercept; compressed pixel data decoded in a child process (:mod:`ml.decode`). A
    multi-frame image is refused here: :func:`frame_pixels` gives its frames."""
    count = frame_count(ds)
    if count != 1:
        raise InputRefused(f"{_uid(ds)} is a multi-frame image of {count} frames")
    return frame_pixels(ds)[0]


class FramePixels(Sequence[NDArray[np.float32]]):
    """The frames of one decoded image, each made float32 (× its RescaleSlope + its
    RescaleIntercept) when it is asked for: a long Enhanced MR file holds its stored values once,
    not every frame at four bytes a pixel as well."""

    def __init__(self, ds: Any, arr: NDArray[Any]) -> None:
        self._ds, self._count = ds, frame_count(ds)
        self._frames = [arr] if self._count == 1 else arr

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> NDArray[np.float32]: ...

    @overload
    def __getitem__(self, index: slice) -> list[NDArray[np.float32]]: ...

    def __getitem__(self, index: int | slice) -> NDArray[np.float32] | list[NDArray[np.float32]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(f"frame {index} of {self._count}")
        index %= self._count
        values = frame_values(self._ds, index, ("RescaleSlope", "RescaleIntercept"))
        slope = float(values["RescaleSlope"] or 1)
        intercept = float(values["RescaleIntercept"] or 0)
        frame = self._frames[index]
        return np.asarray(frame.astype(np.float32) * slope + intercept, dtype=np.float32)


def frame_pixels(ds: Any) -> FramePixels:
    """Each frame of ``ds`` as float32 ``(Rows, Columns)``, in stored order (one for a classic
    image): the stored values × the frame's RescaleSlope + RescaleIntercept (an Enhanced MR
    image keeps them per frame, :func:`ml.header.frame_values`). Decoded now, each frame made
    float32 when it is read (:class:`FramePixels`)."""
    from ml.decode import DecodeError, pixel_array

    try:
        arr = pixel_array(ds)
    except DecodeError as exc:  # out of process for compressed data (ml.decode)
        raise ScoringError(f"cannot decode the pixels of {_uid(ds)}: {exc}") from exc
    count = frame_count(ds)
    if int(ds.get("SamplesPerPixel") or 1) != 1 or arr.ndim != (2 if count == 1 else 3):
        raise InputRefused(f"{_uid(ds)} is not a greyscale image")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) != count:
        # A frame without its own group would be scored with another's values, or defaults.
        raise InputRefused(f"{_uid(ds)} has {len(per_frame)} per-frame groups for {count} frames")
    return FramePixels(ds, arr)


def _uid(ds: Any) -> str:
    return str(getattr(ds, "SOPInstanceUID", "") or "")


MASK_MODES_KEY = "artiscan_mask_modes"
"""ONNX metadata key of the mask modes a model's MaskMode layer applies (comma-separated, in
the order of ``ml.ARTIFACT_TYPES``), written by ``ml export``."""

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


def sidecar_path(weights: Path) -> Path:
    """``NAME.thresholds.json`` beside ``NAME.keras``/``.onnx``/``.tflite``."""
    return weights.with_name(weights.name.rsplit(".", 1)[0] + ".thresholds.json")


def _sidecar(weights: Path | None) -> dict[str, Any]:
    if weights is None:
        return {}
    path = sidecar_path(weights)
    content: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    return content


# --- ONNX: the scoring graph ---------------------------------------------------------------------
# An exported graph ends with the mask modes (ml.model.network.MaskMode) and the transpose back to
# channels-last, all at full resolution: for the native-resolution pruned model that tail cost as
# much as the convolutions (ONNX Runtime profile, 32 slices of 384 x 512). The pipeline serves
# instead the graph cut at the per-pixel mask probabilities (the ``masks`` layer's Sigmoid, whose
# input is an ONNX Conv, so channel-first) and applies the modes itself, per type: a ``whole``
# type is one comparison per slice, a ``gated`` one a multiplication by a scalar. The graph is
# edited on the protobuf wire format (field numbers of onnx.proto), so a scoring process never
# imports the onnx package (0.1-0.3 s of a cold start).

_MASK_SIGMOID = re.compile(r"(^|/)masks(_\d+)?/Sigmoid$")
_MODE_TAIL_OPS = frozenset(
    {"Add", "Cast", "ConstantOfShape", "Gather", "Identity", "Mul", "Reshape", "Shape",
     "Squeeze", "Transpose", "Unsqueeze",
     # the line mode's map of the input image (ml.model.network.line_map_ops)
     "Abs", "Concat", "Div", "GreaterOrEqual", "Max", "Min", "ReduceMax", "ReduceMean",
     "ReduceSum", "Slice", "Sub", "Tile",
     # the level and head modes' (ml.model.network.level_map_ops, head_map_ops)
     "AveragePool", "CumSum", "Greater", "ReduceMin"}
)  # fmt: skip
"""The ONNX ops that the exported mask-mode tail is made of; a graph whose tail holds any other
op is served as it is."""


class _Field(NamedTuple):
    number: int
    value: int | memoryview
    raw: memoryview


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(buf: memoryview) -> list[_Field]:
    """The fields of one protobuf message, in order (nested messages left as bytes)."""
    out = []
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _read_varint(buf, pos)
        wire = key & 7
        value: int | memoryview
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"protobuf wire type {wire} does not occur in ONNX files")
        if pos > len(buf):
            raise ValueError("truncated protobuf message")
        out.append(_Field(key >> 3, value, buf[start:pos]))
    return out


def _message(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _strings(fields: list[_Field], number: int) -> list[str]:
    return [bytes(f.value).decode() for f in fields if f.number == number and _is_bytes(f)]


def _is_bytes(field: _Field) -> bool:
    return not isinstance(field.value, int)


def _ints(fields: list[_Field], number: int) -> list[int]:
    """A repeated integer field, packed or not."""
    out: list[int] = []
    for f in fields:
        if f.number != number:
            continue
        if isinstance(f.value, int):
            out.append(f.value)
            continue
        pos = 0
        while pos < len(f.value):
            value, pos = _read_varint(f.value, pos)
            out.append(value)
    return out


class _Node(NamedTuple):
    field: _Field
    inputs: list[str]
    outputs: list[str]
    name: str
    op: str


class _Graph(NamedTuple):
    top: list[_Field]
    """The ModelProto's fields."""
    graph: _Field
    """Its ``graph`` field."""
    fields: list[_Field]
    """The GraphProto's fields."""
    nodes: list[_Node]
    outputs: dict[str, _Field]
    initializers: dict[str, tuple[_Field, list[int]]]
    """Name → (field, dims)."""


def _parse_onnx(model: bytes) -> _Graph | None:
    """The parts of a serialised ONNX ModelProto that the scoring graph needs (field numbers
    of onnx.proto: ModelProto.graph 7; GraphProto node 1, initializer 5, output 12; NodeProto
    input 1, output 2, name 3, op_type 4; TensorProto dims 1, name 8; ValueInfoProto name 1);
    None for a graph with control flow (subgraphs are not walked), without one graph, or that
    does not parse (ONNX Runtime then says what is wrong with the file)."""
    try:
        return _parse_onnx_fields(model)
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def _parse_onnx_fields(model: bytes) -> _Graph | None:
    top = _fields(memoryview(model))
    graphs = [f for f in top if f.number == 7 and _is_bytes(f)]
    if len(graphs) != 1 or isinstance(graphs[0].value, int):
        return None
    fields = _fields(graphs[0].value)
    nodes, outputs, initializers = [], {}, {}
    for f in fields:
        if isinstance(f.value, int):
            continue
        if f.number == 1:
            parts = _fields(f.value)
            op = (_strings(parts, 4) or [""])[0]
            if op in ("If", "Loop", "Scan"):
                return None
            name = (_strings(parts, 3) or [""])[0]
            nodes.append(_Node(f, _strings(parts, 1), _strings(parts, 2), name, op))
        elif f.number == 5:
            parts = _fields(f.value)
            initializers[(_strings(parts, 8) or [""])[0]] = (f, _ints(parts, 1))
        elif f.number == 12:
            outputs[(_strings(_fields(f.value), 1) or [""])[0]] = f
    return _Graph(top, graphs[0], fields, nodes, outputs, initializers)


def onnx_conv_widths(model: bytes) -> list[int]:
    """Output channels of every Conv of a serialised ONNX model, in graph order (from the
    weights' first dimension; a Conv whose weights are not an initializer is left out)."""
    graph = _parse_onnx(model)
    if graph is None:
        return []
    dims = [graph.initializers.get(n.inputs[1], (None, []))[1] for n in graph.nodes
            if n.op == "Conv" and len(n.inputs) > 1]  # fmt: skip
    return [d[0] for d in dims if d]


class ScoringGraph(NamedTuple):
    """An ONNX model cut at its per-pixel mask probabilities (see :func:`onnx_scoring_graph`)."""

    model: bytes
    """The edited ModelProto (serialised)."""
    output: str
    """Name of its float32 ``(B, K, h, w)`` output that replaces ``masks``."""
    applies_modes: bool
    """Whether the part cut off applied mask modes (a MaskMode layer)."""
    modes: tuple[str, ...] | None
    """The modes the cut-off part applied, read from the graph (:func:`_graph_mask_modes`): all
    ``pixel`` without a MaskMode; None where they could not be read (then the pipeline serves
    the file whole)."""


def onnx_scoring_graph(model: bytes) -> ScoringGraph | None:
    """``model`` (a serialised ONNX ModelProto exported from Keras) with its ``masks`` output
    replaced by the per-pixel mask probabilities, channel-first, and every node and initializer
    that only served ``masks`` removed; the other outputs, inputs and metadata unchanged.

    None when the graph is not the expected shape (no ``masks`` output, not exactly one
    ``.../masks/Sigmoid`` node fed by a Conv, control flow, or ops in the removed tail other than
    :data:`_MODE_TAIL_OPS`): the file is then served as it is.
    """
    graph = _parse_onnx(model)
    if graph is None or "masks" not in graph.outputs:
        return None
    producer = {out: node for node in graph.nodes for out in node.outputs}
    sigmoids = [n for n in graph.nodes if n.op == "Sigmoid" and _MASK_SIGMOID.search(n.name)]
    if len(sigmoids) != 1 or not sigmoids[0].inputs or not sigmoids[0].outputs:
        return None
    feeding = producer.get(sigmoids[0].inputs[0])
    if feeding is None or feeding.op != "Conv":
        return None  # only an ONNX Conv output is known to be channel-first
    probabilities = sigmoids[0].outputs[0]
    needed = {name for name in graph.outputs if name != "masks"} | {probabilities}
    alive: set[int] = set()
    for index in range(len(graph.nodes) - 1, -1, -1):
        node = graph.nodes[index]
        if any(o in needed for o in node.outputs):
            alive.add(index)
            needed.update(node.inputs)
    dead = [n for i, n in enumerate(graph.nodes) if i not in alive]
    if any(n.op not in _MODE_TAIL_OPS for n in dead):
        return None
    unused = {id(f) for name, (f, _) in graph.initializers.items() if name not in needed}
    dropped = {id(n.field) for n in dead} | unused
    # ValueInfoProto{name 1, type 2: TypeProto{tensor_type 1: Tensor{elem_type 1: FLOAT,
    # shape 2: TensorShapeProto{dim 1: Dimension{dim_value 1 | dim_param 2}}}}}: (B, K, h, w).
    weights = graph.initializers.get(feeding.inputs[1] if len(feeding.inputs) > 1 else "")
    channels = weights[1][0] if weights and weights[1] else None
    dims = [
        _message(2, b"batch"),
        _varint(1 << 3) + _varint(channels) if channels else _message(2, b"channels"),
        _message(2, b"height"),
        _message(2, b"width"),
    ]
    shape = b"".join(_message(1, d) for d in dims)
    tensor = _varint(1 << 3) + _varint(1) + _message(2, shape)
    info = _message(1, probabilities.encode()) + _message(2, _message(1, tensor))
    edited = bytearray()
    for f in graph.fields:
        if id(f) in dropped:
            continue
        edited += _message(12, info) if f is graph.outputs["masks"] else f.raw
    out = bytearray()
    for f in graph.top:
        out += _message(7, bytes(edited)) if f is graph.graph else f.raw
    applies_modes = any("mask_mode" in n.name for n in dead)
    modes = (
        (_metadata_mask_modes(graph) or _graph_mask_modes(graph))
        if applies_modes
        else ("pixel",) * len(ARTIFACT_TYPES)
    )
    return ScoringGraph(bytes(out), probabilities, applies_modes, modes)


def _metadata_mask_modes(graph: _Graph) -> tuple[str, ...] | None:
    """The modes named in the file's metadata (:data:`MASK_MODES_KEY`; ModelProto
    metadata_props 14, StringStringEntryProto key 1, value 2), or None: an older file, read
    from its graph instead (:func:`_graph_mask_modes`)."""
    for f in graph.top:
        if f.number != 14 or not _is_bytes(f):
            continue
        entry = _fields(f.value)  # type: ignore[arg-type]
        if _strings(entry, 1) == [MASK_MODES_KEY]:
            modes = tuple((_strings(entry, 2) or [""])[0].split(","))
            known = len(modes) == len(ARTIFACT_TYPES) and set(modes) <= set(MASK_MODES)
            return modes if known else None
    return None


_MODE_SELECTOR = re.compile(r"mask_mode[^/]*/Const(_(\d+))?:0$")


def _graph_mask_modes(graph: _Graph) -> tuple[str, ...] | None:
    """The per-type modes baked into an exported MaskMode layer of a file without
    :data:`MASK_MODES_KEY` (exported before the level mode): its 0/1 selector constants,
    created in the order of ``MaskMode.call`` (pixel, gated, whole, and line where a type uses
    it) and so named ``Const``, ``Const_1``, ``Const_2`` (``Const_3``) by the TensorFlow graph
    (TensorProto fields: name 8, float_data 4, raw_data 9). None unless there are exactly those
    three or four, of K float32 values each, one 1 per type: then the file is served whole, with
    the modes it carries itself (a sidecar's modes may describe a newer ``.keras`` file than the
    ``.onnx``). The level mode's map has constants of its own that TensorFlow names the same
    way, hence the metadata."""
    selectors: dict[int, Any] = {}
    for name, (field, _) in graph.initializers.items():
        match = _MODE_SELECTOR.search(name)
        if match is None or isinstance(field.value, int):
            continue
        parts = _fields(field.value)
        raw = [bytes(f.value) for f in parts if f.number == 9 and not isinstance(f.value, int)]
        packed = [bytes(f.value) for f in parts if f.number == 4 and not isinstance(f.value, int)]
        data = raw[0] if raw else packed[0] if packed else b""
        if len(data) != 4 * len(ARTIFACT_TYPES):
            return None
        selectors[int(match.group(2) or 0)] = np.frombuffer(data, dtype="<f4")
    names = ("pixel", "gated", "whole", "line")
    if sorted(selectors) not in ([0, 1, 2], [0, 1, 2, 3]):
        return None
    picks = np.stack([selectors[i] for i in sorted(selectors)])  # (pixel, gated, whole...) x K
    if not (np.isin(picks, (0.0, 1.0)).all() and (picks.sum(axis=0) == 1).all()):
        return None
    return tuple(names[int(i)] for i in picks.argmax(axis=0))


NCHWC_MIN_WIDTH = 8
"""ONNX Runtime's blocked channel layout (NCHWc: channels in blocks of 8 or 16 floats) pays
off for convolutions of at least a block of channels; for a graph whose convolutions are
mostly narrower (the pruned model: 2 channels at full resolution) it pads every pixel to a
block and reorders at each step, and is slower (32 slices, 2 threads, CPU time: pruned 0.92 s
without vs 1.46 s with it; the full model 1.16 s without vs 0.79 s with it)."""


def onnx_blocked_layout_pays(model: bytes) -> bool:
    """Whether most of the model's convolutions have at least :data:`NCHWC_MIN_WIDTH` output
    channels (then the session keeps ONNX Runtime's NCHWc layout optimisation)."""
    widths = onnx_conv_widths(model)
    return not widths or sum(w >= NCHWC_MIN_WIDTH for w in widths) * 2 >= len(widths)


def served_outputs(
    out: dict[str, NDArray[np.float32]], modes: tuple[str, ...], inputs: dict[str, Any]
) -> dict[str, Any]:
    """A Keras model's outputs from a ``predict_probabilities`` result: ``masks`` ``(B, h, w,
    K)`` with ``modes`` applied on the network's presence, ``presence``, ``suitability``."""
    images = np.asarray(inputs["image"])[..., 0]
    served = apply_mask_modes(out["probabilities"], out["presence"], modes, images)
    return {
        "masks": np.ascontiguousarray(np.moveaxis(served, 1, -1)),
        "presence": out["presence"],
        "suitability": out["suitability"],
    }


class OnnxModel:
    """An ONNX Runtime session behind the calls the pipeline makes (``predict_on_batch``, and
    ``predict_probabilities`` where the graph could be cut, see :func:`onnx_scoring_graph`).

    Loads without TensorFlow: a scoring process that serves an ``.onnx`` file starts in well
    under a second. The mask modes come from the graph itself (:func:`_graph_mask_modes`); a
    graph whose modes cannot be read is served whole (:attr:`modes` None).
    """

    batch_size = 2
    """Slices per run. ONNX Runtime's CPU arena grows to the largest batch's tensors, and every
    new page of it costs a page fault on first touch: at batch 8 a cold process spent ~60 k
    more faults (0.5-1.2 s of system time on this shared 2-core machine) than at batch 2, whose
    warm speed is the same (pruned model, 32 slices of 384 x 512)."""

    def __init__(self, path: Path, threads: int | None = None, cut: bool = True) -> None:
        """``cut`` False: serve the file whole (its own ``masks``), as before the cut."""
        import onnxruntime as ort

        if threads is None:
            # Several scoring processes on a few cores each take a share (the benchmarks do).
            threads = int(os.environ.get("ARTISCAN_INFERENCE_THREADS", "2"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle worker threads sleep instead of spinning: between two runs the pipeline's own
        # NumPy post-processing needs the same cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        data = path.read_bytes()
        level = ort.GraphOptimizationLevel
        blocked = onnx_blocked_layout_pays(data)
        options.graph_optimization_level = (
            level.ORT_ENABLE_ALL if blocked else level.ORT_ENABLE_EXTENDED
        )
        scoring = onnx_scoring_graph(data) if cut else None
        self.modes: tuple[str, ...] | None = None
        """Mask modes the pipeline applies to :meth:`predict_probabilities`; None = the session
        serves the file's own ``masks`` (modes applied in the graph)."""
        self._probabilities = ""
        if scoring is not None and scoring.modes is not None:
            self.modes, data, self._probabilities = scoring.modes, scoring.model, scoring.output
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        size = self.session.get_modelmeta().custom_metadata_map.get(WORKING_SIZE_KEY)
        self.working_size = int(size) if size else None

    def _run(self, inputs: dict[str, Any]) -> dict[str, NDArray[np.float32]]:
        values = self.session.run(self.outputs, {k: np.asarray(v) for k, v in inputs.items()})
        return dict(zip(self.outputs, values, strict=True))

    def predict_probabilities(self, inputs: dict[str, Any]) -> dict[str, NDArray[np.float32]]:
        """``probabilities`` float32 ``(B, K, h, w)`` per pixel before the mask modes,
        ``presence`` ``(B, K)``, ``suitability`` ``(B, 1)``; only where :attr:`modes` is set."""
        if self.modes is None:
            raise ValueError("this ONNX graph serves its masks with the modes applied")
        out = self._run(inputs)
        return {
            "probabilities": out[self._probabilities],
            "presence": out["presence"],
            "suitability": out["suitability"],
        }

    def predict_on_batch(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The Keras model's outputs: ``masks`` ``(B, h, w, K)`` served (modes applied),
        ``presence`` ``(B, K)``, ``suitability`` ``(B, 1)``."""
        if self.modes is None:
            return self._run(inputs)
        return served_outputs(self.predict_probabilities(inputs), self.modes, inputs)


class KerasProbabilities:
    """A Keras model served by its per-pixel probabilities (its mask modes stripped from the
    graph), the pipeline applying :attr:`modes` itself: how a ``.keras`` file whose sidecar
    holds a presence stack is loaded (the modes must use the stacked presence, which the
    graph does not compute). Same calls as :class:`OnnxModel`."""

    def __init__(self, model: Any) -> None:
        network = importlib.import_module("ml.model.network")
        self.modes: tuple[str, ...] = tuple(network.mask_modes(model))
        self.model = network.with_mask_modes(model, None)
        self.working_size: int | None = network.working_size(model)
        self._on_device: Any = None
        """The jitted stateless call :meth:`predict_on_device` uses; None = not built yet,
        False = this backend or device cannot keep the outputs on the GPU."""

    def predict_probabilities(self, inputs: dict[str, Any]) -> dict[str, NDArray[np.float32]]:
        """``probabilities`` float32 ``(B, K, h, w)`` before the mask modes, ``presence``,
        ``suitability``."""
        out = self.model.predict_on_batch(inputs)
        return {
            "probabilities": np.moveaxis(np.asarray(out["masks"], np.float32), -1, 1),
            "presence": np.asarray(out["presence"], np.float32),
            "suitability": np.asarray(out["suitability"], np.float32),
        }

    def predict_on_batch(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The served ``masks`` ``(B, h, w, K)`` (:attr:`modes` on the network's own presence),
        ``presence``, ``suitability``."""
        return served_outputs(self.predict_probabilities(inputs), self.modes, inputs)

    def predict_on_device(self, inputs: dict[str, Any], xp: Any) -> dict[str, Any] | None:
        """:meth:`predict_probabilities` with ``probabilities`` left on the GPU as an ``xp``
        (CuPy) array, handed over through DLPack: Keras on JAX, where ``predict_on_batch`` copies
        every output to the host (63 MB for 32 slices) and the pipeline copied them back for
        the masks. None where that cannot be done (another backend, JAX on the CPU, a failed
        hand-over: then never tried again in this process); the caller falls back."""
        if self._on_device is False:
            return None
        try:
            if self._on_device is None:
                self._on_device = self._device_call()
                if self._on_device is False:
                    return None
            call, state = self._on_device
            probabilities, presence, suitability = call(*state, inputs["image"], inputs["header"])
            return {
                "probabilities": xp.from_dlpack(probabilities),
                "presence": np.asarray(presence, np.float32),
                "suitability": np.asarray(suitability, np.float32),
            }
        except Exception as exc:  # any failure: the host path serves instead
            logger.warning("scoring: outputs not kept on the GPU (%s); copying through the host",
                           type(exc).__name__)  # fmt: skip
            self._on_device = False
            return None

    def _device_call(self, require_gpu: bool = True) -> Any:
        """``(jitted call, model state)`` for :meth:`predict_on_device`, or False where the
        outputs cannot stay on a GPU (another backend; JAX without a GPU unless
        ``require_gpu`` is False, as a test on the CPU asks)."""
        keras = importlib.import_module("keras")
        if keras.backend.backend() != "jax":
            return False
        jax = importlib.import_module("jax")
        if require_gpu and jax.default_backend() != "gpu":
            return False
        model = self.model

        def call(trainable: Any, other: Any, image: Any, header: Any) -> Any:
            out, _ = model.stateless_call(
                trainable, other, {"image": image, "header": header}, training=False
            )
            masks = jax.numpy.transpose(out["masks"].astype("float32"), (0, 3, 1, 2))
            return masks, out["presence"], out["suitability"]

        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
        )
        return jax.jit(call), state


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
        # Slices per model call: the model's own preference (ONNX Runtime: 2); a LiteRT file 2
        # as well (XNNPACK's buffers grow with the batch like ONNX Runtime's arena: pruned, 32
        # slices, cold 1.6-1.9 s and 97 k page faults at 2 against 2.1-2.2 s and 310 k at 8, the
        # same warm); else the class's.
        default = (
            2 if weights is not None and weights.suffix == ".tflite" else type(self).batch_size
        )
        self.batch_size = int(getattr(model, "batch_size", default))
        self.thresholds = np.full(len(ARTIFACT_TYPES), self.threshold, np.float32)
        self.working_size: int | None = model_working_size(model)
        """Long side of the working grid the model runs at; None = native resolution."""
        # Per-type thresholds tuned on the validation split, when the weights have them.
        content = _sidecar(weights)
        if "thresholds" in content:
            values = content["thresholds"]
            self.thresholds = np.array([values[n] for n in ARTIFACT_TYPES], np.float32)
        if content.get("working_size") is not None:
            self.working_size = int(content["working_size"])
        model_modes = getattr(model, "modes", None)
        self.modes: tuple[str, ...] = ("pixel",) * len(ARTIFACT_TYPES)
        """Mask modes this pipeline applies to the model's outputs: those of a model that
        serves its per-pixel probabilities (``predict_probabilities``: a cut ONNX graph, an int8
        LiteRT file); all
        ``pixel`` for every other model, which applies its own modes."""
        self._raw = False
        if model_modes is not None and hasattr(model, "predict_probabilities"):
            self._raw, self.modes = True, tuple(model_modes)
        try:
            self.stack: PresenceStack | None = PresenceStack.from_json(
                content.get("presence_stack"), ARTIFACT_TYPES
            )
        except ValueError as exc:
            raise ScoringError(f"{sidecar_path(weights or Path('?')).name}: {exc}") from exc
        """Re-estimates the presence of some types with the slice's k-space (the sidecar's
        ``presence_stack``, see :class:`gpu_ops.scoring.PresenceStack`), before the modes."""
        if self.stack and not self._raw:
            raise ScoringError(
                f"{weights.name if weights else 'this model'}: its sidecar re-estimates presence "
                "with the slice's k-space, which needs the network's per-pixel probabilities, "
                "but this model applies its mask modes itself (an ONNX graph that could not "
                "be cut, a LiteRT file exported before the stack, a Keras model passed in "
                "directly: load the .keras file with ScoringPipeline.load, or export it again "
                "with `python -m ml export`)"
            )

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
            modes = litert.pipeline_modes(_sidecar(path))  # an int8 file's, applied here
            return cls(litert.LiteRTModel(path, threads=threads, modes=modes), path)
        # Imported by name at call time: the web side imports this module for its types and
        # must never reach Keras (the import contract follows static imports, even lazy ones).
        network = importlib.import_module("ml.model.network")
        model = network.load(path)
        if _sidecar(path).get("presence_stack"):
            return cls(KerasProbabilities(model), path)
        return cls(model, path)

    def _batches(
        self, images: NDArray[np.float32], headers: NDArray[np.float32], on_device: bool = False
    ) -> Iterator[tuple[slice, dict[str, NDArray[np.float32]]]]:
        """The model's outputs batch by batch: ``(slice of the input, {probabilities,
        presence, suitability, images})``: ``probabilities`` float32 ``(b, K, h, w)`` per pixel
        before :attr:`modes` (channel-first; a view of the channels-last masks of a model that
        applies its own modes), ``presence`` ``(b, K)``, ``suitability`` ``(b,)``, ``images``
        the batch's input ``(b, h, w)`` (for the modes of ``IMAGE_MAPS``). ``on_device``:
        ``probabilities`` may come as a :attr:`xp` array on the GPU
        (:meth:`KerasProbabilities.predict_on_device`)."""
        device = getattr(self.model, "predict_on_device", None) if on_device else None
        for start in range(0, len(images), self.batch_size):
            stop = min(start + self.batch_size, len(images))
            inputs = {"image": images[start:stop, :, :, None], "header": headers[start:stop]}
            kept = None if device is None or self.xp is np else device(inputs, self.xp)
            if kept is not None:
                out, probabilities = kept, kept["probabilities"]
            elif self._raw:
                out = self.model.predict_probabilities(inputs)
                probabilities = np.asarray(out["probabilities"], np.float32)
            else:
                out = self.model.predict_on_batch(inputs)
                probabilities = np.moveaxis(np.asarray(out["masks"], np.float32), -1, 1)
            yield (
                slice(start, stop),
                {
                    "probabilities": probabilities,
                    "presence": np.asarray(out["presence"], np.float32),
                    "suitability": np.asarray(out["suitability"], np.float32)[:, 0],
                    "images": images[start:stop],
                },
            )

    def infer(
        self,
        images: NDArray[np.float32],
        headers: NDArray[np.float32],
        kspace: NDArray[np.float32] | None = None,
    ) -> dict[str, NDArray[np.float32]]:
        """Run the model on canonical, normalised ``images`` float32 ``(S, H, W)`` already on
        its input grid (padded to multiples of 16, or the working grid of a model that has a
        :attr:`working_size`; :meth:`score_arrays` does both ways).

        ``headers`` float32 ``(S, 8)``. Returns ``masks`` ``(S, H, W, K)`` (the mask modes
        applied), ``presence`` ``(S, K)``, ``suitability`` ``(S,)``, float32 probabilities.
        ``kspace``: :func:`gpu_ops.scoring.kspace_features` of the slices on their own grid
        (canonical, normalised), for a pipeline with a :attr:`stack`, as :meth:`score_arrays`
        computes them; None = those of ``images`` themselves, which differ where ``images``
        are on a working grid (the resampling cuts the outer k-space off).
        """
        parts: dict[str, list[NDArray[np.float32]]] = {"masks": [], "presence": [], "suit": []}
        if self.stack and kspace is None:
            kspace = to_numpy(kspace_features(images))
        for part, out in self._batches(images, headers):
            presence = out["presence"]
            if self.stack and kspace is not None:
                presence = self.stack.apply(presence, kspace[part])
            served = apply_mask_modes(out["probabilities"], presence, self.modes, out["images"])
            parts["masks"].append(np.moveaxis(served, 1, -1))
            parts["presence"].append(presence)
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
            resize = None
            if self.working_size is not None:

                def resize(plane: Any, shape: tuple[int, int] = (crows, ccols)) -> Any:
                    # One plane, or a stack of them (serve_masks on a GPU): the last two axes.
                    return upsample_probabilities(plane, shape, axes=(-2, -1))

            # Thresholded batch by batch, type by type: the float masks of a whole series
            # (S x K x H x W) are never held at once.
            net_input = to_numpy(to_model_grid(batch, self.working_size))
            # On the slices' own grid: the working grid's resampling cuts the outer k-space.
            kspace = to_numpy(kspace_features(batch)) if self.stack else None
            for part, out in self._batches(net_input, vectors, on_device=True):
                rows_of = picked[part]
                if self.stack and kspace is not None:
                    out["presence"] = self.stack.apply(out["presence"], kspace[part])
                # Slices in input order (one phase-encode direction, NumPy): written in place.
                contiguous = xp is np and rows_of == list(range(rows_of[0], rows_of[-1] + 1))
                target = masks[rows_of[0] : rows_of[-1] + 1] if contiguous else None
                binary = serve_masks(
                    xp.asarray(out["probabilities"]),
                    xp.asarray(out["presence"]),
                    self.modes,
                    self.thresholds,
                    crows,
                    ccols,
                    resize=resize,
                    out=None if target is None else canonical_batch(target, pe),
                    images=(
                        xp.asarray(out["images"])
                        if any(m in IMAGE_MAPS for m in self.modes)
                        else None
                    ),
                )
                if target is None:
                    masks[rows_of] = to_numpy(canonical_batch(binary, pe))  # (s, K, rows, cols)
                presence[rows_of] = out["presence"]
                suitability[rows_of] = out["suitability"]
        return masks, presence, suitability

    def score_datasets(
        self,
        datasets: list[Any],
        images: list[NDArray[np.float32]] | None = None,
        frames: list[int] | None = None,
    ) -> ScoreResult:
        """Score the pydicom datasets of one series, in the order given; ``images``: their
        :func:`pixels`, when the caller has decoded them already (single-frame images), or
        their :func:`frame_pixels` with ``frames``, the 0-based frame of ``datasets[i]`` that
        ``images[i]`` is (a multi-frame dataset repeated once per frame given), so each frame is
        scored with its own header values.

        Without ``images`` a multi-frame (Enhanced MR) image is scored frame by frame, each frame
        with its own header values (:func:`ml.header.frame_values`): it gives one slice per
        frame, in stored order, each under the file's SOPInstanceUID (the n-th slice with that
        UID is its frame n)."""
        if not datasets:
            raise ScoringError("no DICOM images to score")
        if images is None:
            sources, images = [], []
            for ds in datasets:
                decoded = frame_pixels(ds)
                sources += [(ds, index) for index in range(len(decoded))]
                images += decoded
        elif len(images) != len(datasets):
            raise ScoringError(f"{len(images)} images for {len(datasets)} datasets")
        elif frames is not None:
            if len(frames) != len(datasets):
                raise ScoringError(f"{len(frames)} frame numbers for {len(datasets)} datasets")
            sources = list(zip(datasets, frames, strict=True))
        else:
            sources = [(ds, 0) for ds in datasets]
        try:
            headers = [AcquisitionHeader.from_dataset(ds, frame) for ds, frame in sources]
        except (AttributeError, TypeError, ValueError) as exc:
            raise InputRefused(f"unusable acquisition header: {exc}") from exc
        masks, presence, suitability = self.score_arrays(images, headers)
        return ScoreResult(
            sop_instance_uid=[_uid(ds) for ds, _ in sources],
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
