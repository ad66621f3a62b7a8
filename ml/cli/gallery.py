"""``python -m ml gallery --out gallery.png``: every artifact type at three severities.

One row per type of :data:`ml.ARTIFACT_TYPES`; columns: severity 0.3, 0.6, 1.0 with phase-encode
along the rows (ROW, horizontal), then the same with phase-encode along the columns (COL,
vertical). Each panel shows the artifacted slice with its ground-truth mask outlined in red. The
slice is an axial T2-weighted TSE at 3 T synthesised from SPM's tissue maps (the first installed
of a few sources otherwise), 256 x 256, 0.9 mm pixels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

SEVERITIES: tuple[float, ...] = (0.3, 0.6, 1.0)
PREFERRED_SOURCES: tuple[str, ...] = ("nimare_mni152", "spm_tpm", "icbm152_2009a", "odin_brain")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gallery",
        help="draw every artifact type at three severities with its mask outline",
        description=__doc__,
    )
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="matrix (square), pixels")
    parser.add_argument("--dpi", type=int, default=80)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ml.data.sources import SourceMissing

    try:
        draw_gallery(args.out, seed=args.seed, size=args.size, dpi=args.dpi)
    except SourceMissing as exc:
        print(f"gallery: {exc}", file=sys.stderr)
        return 1
    print(f"gallery: wrote {args.out}")
    return 0


def draw_gallery(out: Path, *, seed: int = 0, size: int = 256, dpi: int = 80) -> None:
    """Render the gallery PNG to ``out`` (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ml import ARTIFACT_TYPES
    from ml.data import dataset, slices
    from ml.data.sources import LOADERS, SourceMissing
    from ml.simulate import AcquisitionHeader, ground_truth, simulate

    volume = None
    errors: list[str] = []
    for name in PREFERRED_SOURCES:
        try:
            volume = LOADERS[name]()
            break
        except SourceMissing as exc:
            errors.append(str(exc))
    if volume is None:
        raise SourceMissing("no source for the gallery: " + "; ".join(errors))

    presence = dataset.presence_map(volume)
    lo, hi = slices.signal_extent(presence, 2)
    index = lo + int(0.55 * (hi - lo)) if volume.shape[2] > 1 else 0
    spacing = 230.0 / size
    geometry = slices.Geometry(
        orientation="axial",
        index=index,
        matrix=(size, size),
        pixel_spacing_mm=(spacing, spacing),
        angle_deg=0.0,
        scale=1.0,
        shift_mm=(0.0, 0.0),
    )
    rng = np.random.default_rng(seed)
    result = dataset.clean_slice(volume, geometry, rng, sequence="T2_TSE", field_strength_t=3.0)
    if result is None:
        raise RuntimeError(f"the gallery slice of {volume.name} has no head")
    clean, maps, protocol = result

    columns = [(pe, s) for pe in ("ROW", "COL") for s in SEVERITIES]
    fig, axes = plt.subplots(
        len(ARTIFACT_TYPES),
        len(columns) + 1,
        figsize=(1.6 * (len(columns) + 1), 1.6 * len(ARTIFACT_TYPES)),
        squeeze=False,
    )
    for row, name in enumerate(ARTIFACT_TYPES):
        axes[row][0].imshow(clean, cmap="gray", vmin=0, vmax=1.2)
        axes[row][0].set_ylabel(name, fontsize=8)
        if row == 0:
            axes[row][0].set_title("clean", fontsize=7)
        for col, (pe, severity) in enumerate(columns, start=1):
            header = AcquisitionHeader(
                rows=size,
                columns=size,
                phase_encode=pe,  # type: ignore[arg-type]
                pixel_bandwidth_hz=protocol.pixel_bandwidth_hz,
                field_strength_t=protocol.field_strength_t,
                pixel_spacing_mm=(spacing, spacing),
                te_ms=protocol.te_ms,
                tr_ms=protocol.tr_ms,
                ti_ms=protocol.ti_ms,
            )
            image = simulate(clean, name, severity, header, seed + row, maps=maps)
            mask, nondiagnostic = ground_truth(clean, image)
            ax = axes[row][col]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1.2)
            if np.any(mask):
                ax.contour(np.asarray(mask), levels=[0.5], colors="red", linewidths=0.6)
            flag = " ND" if bool(nondiagnostic) else ""
            ax.set_title(f"PE {pe} s={severity:.1f}{flag}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"{volume.name} {protocol.sequence} {protocol.field_strength_t:g} T, "
        f"{protocol.pixel_bandwidth_hz:g} Hz/px; red: ground-truth mask; ND: non-diagnostic; "
        "PE ROW = phase-encode horizontal, COL = vertical",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
