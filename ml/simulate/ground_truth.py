"""Ground-truth masks and the non-diagnostic label of simulated artifacts (MISSION.md convention).

For a clean slice C and its artifacted version A on the same grid: H is the head mask (fill the
holes of C > 0.1 p99(C), keep the largest 4-connected component); r = p99 of C inside H;
D = gaussian_filter(|A - C|, sigma = 1.5 px, mode = reflect). The mask is D > 0.05 r over the
whole image; the slice is non-diagnostic when D > 0.10 r over at least 10 % of H.
"""

from __future__ import annotations

from typing import Any

from gpu_ops import array_module
from gpu_ops.ndimage import gaussian_filter2d
from ml.simulate._common import head_and_reference

SIGMA_PX = 1.5
MASK_FRACTION = 0.05
NONDIAGNOSTIC_FRACTION = 0.10
NONDIAGNOSTIC_AREA = 0.10


def ground_truth(clean: Any, artifacted: Any, reference: Any = None) -> tuple[Any, Any]:
    """Artifact mask and non-diagnostic flag of ``artifacted`` against ``clean``.

    ``clean``, ``artifacted``: float ``(H, W)`` or ``(B, H, W)``, NumPy or CuPy, same shape.
    Returns ``(mask, nondiagnostic)``: mask uint8 (0/1) of the input shape; nondiagnostic a
    0-d bool array for one slice or bool ``(B,)`` for a batch; same array kind as the input.

    ``reference``: the slice H and r are taken from, when ``clean`` is not the clean slice —
    one artifact of several, measured as the change its own step made (``clean`` = the image
    before it), against the clean slice's head and level as the convention says (the image
    before it may carry a bias field that moved the head's p99 by half).
    """
    if clean.shape != artifacted.shape:
        raise ValueError(f"shape mismatch: clean {clean.shape}, artifacted {artifacted.shape}")
    xp = array_module(clean)
    single = clean.ndim == 2
    c = xp.asarray(clean, dtype=xp.float32).reshape((-1, *clean.shape[-2:]))
    a = xp.asarray(artifacted, dtype=xp.float32).reshape(c.shape)
    base = c if reference is None else xp.asarray(reference, dtype=xp.float32).reshape(c.shape)
    head, ref = head_and_reference(base)
    d = gaussian_filter2d(xp.abs(a - c), SIGMA_PX)
    r = ref[:, None, None]
    mask = (d > MASK_FRACTION * r).astype(xp.uint8)
    strong = (d > NONDIAGNOSTIC_FRACTION * r) & head
    head_area = head.sum(axis=(-2, -1))
    nondiagnostic = (head_area > 0) & (strong.sum(axis=(-2, -1)) >= NONDIAGNOSTIC_AREA * head_area)
    if single:
        return mask[0], nondiagnostic[0]
    return mask, nondiagnostic
