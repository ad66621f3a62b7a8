"""Export a saved model for light serving: ONNX (through Keras 3's ``model.export``, tf2onnx).

The exported graph keeps the Keras model's inputs (``image`` float32 ``(B, H, W, 1)``,
``header`` float32 ``(B, 8)``) and outputs (``masks``, ``presence``, ``suitability``) with dynamic
batch and spatial sizes. After writing, the export is checked against the Keras model on a
random batch: every output must agree within :data:`TOLERANCE` (absolute, on probabilities).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TOLERANCE = 1e-4


def check_inputs(seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    """A fixed random batch: two 64 x 80 canonical slices and their header vectors."""
    rng = np.random.default_rng(seed)
    return {
        "image": rng.uniform(0, 1.2, (2, 64, 80, 1)).astype(np.float32),
        "header": rng.normal(0, 1, (2, 8)).astype(np.float32),
    }


def max_difference(model: Any, session: Any) -> float:
    """Largest absolute output difference between a Keras model and an ONNX Runtime session."""
    x = check_inputs()
    expected = model.predict_on_batch(x)
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, x), strict=True))
    return max(
        float(np.max(np.abs(np.asarray(expected[k]) - np.asarray(got[k])))) for k in expected
    )


def export_onnx(model_path: Path, out: Path) -> float:
    """Write ``out`` (.onnx) from the ``.keras`` model; returns the checked max difference.

    Raises ``ValueError`` when the difference exceeds :data:`TOLERANCE`.
    """
    import onnxruntime as ort

    from ml.model import network
    from ml.pipeline import MASK_MODES_KEY, WORKING_SIZE_KEY

    model = network.load(model_path)
    model.predict_on_batch(check_inputs())  # Keras exports only a model that has been called
    out.parent.mkdir(parents=True, exist_ok=True)
    model.export(str(out), format="onnx", verbose=False)
    size = network.working_size(model)
    modes = network.mask_modes(model)
    metadata: dict[str, str] = {}
    if size is not None:
        # The working size travels inside the file too (ScoringPipeline reads it from there when
        # no thresholds sidecar names it).
        metadata[WORKING_SIZE_KEY] = str(size)
    if any(m != "pixel" for m in modes):
        # So do the mask modes: the pipeline cuts the graph before them and applies them itself.
        metadata[MASK_MODES_KEY] = ",".join(modes)
    if metadata:
        import onnx

        proto = onnx.load(str(out))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(out))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    difference = max_difference(model, session)
    if difference > TOLERANCE:
        out.unlink()  # never left where `ml score --model` would serve it
        raise ValueError(f"ONNX outputs differ from Keras by {difference:.2e} > {TOLERANCE}")
    return difference
