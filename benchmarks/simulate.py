"""Simulator throughput: slices/s for a batch of 32 slices of 384x512, every artifact type,
NumPy on the CPU and CuPy on the GPU (when CuPy and a CUDA device are present).

    .venv/bin/python benchmarks/simulate.py [--batch 32] [--repeats 3]

Prints one line per type and backend, the best of ``--repeats`` runs after one warm-up, and the
CuPy/NumPy speed ratio. The phantom is a synthetic head (scalp fat, skull, brain, a sinus).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone, uninstalled

from gpu_ops import cupy_available, optional_import
from ml import ARTIFACT_TYPES
from ml.simulate import AcquisitionHeader, simulate

ROWS, COLUMNS = 384, 512


def phantom(batch: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    yy, xx = np.mgrid[:ROWS, :COLUMNS].astype(np.float32)

    def inside(ay: float, ax: float) -> np.ndarray[Any, Any]:
        return ((yy - ROWS / 2) / ay) ** 2 + ((xx - COLUMNS / 2) / ax) ** 2 <= 1.0

    image = np.zeros((ROWS, COLUMNS), np.float32)
    image[inside(170, 150)] = 1.0
    image[inside(160, 140)] = 0.15
    image[inside(150, 130)] = 0.6
    image[inside(100, 80)] = 0.8
    image[(yy - 100) ** 2 + (xx - COLUMNS / 2) ** 2 <= 15**2] = 0.0
    scale = np.linspace(0.8, 1.2, batch, dtype=np.float32)[:, None, None]
    return image[None] * scale


def time_backend(xp: Any, batch: np.ndarray[Any, Any], repeats: int) -> dict[str, float]:
    header = AcquisitionHeader(rows=ROWS, columns=COLUMNS, phase_encode="ROW",
                               pixel_bandwidth_hz=130.0)  # fmt: skip
    data = xp.asarray(batch)
    sync = (lambda: xp.cuda.Stream.null.synchronize()) if xp is not np else (lambda: None)
    rates = {}
    for artifact in ARTIFACT_TYPES:
        simulate(data, artifact, 0.7, header, seed=0)  # warm-up (FFT plans, kernels)
        sync()
        best = float("inf")
        for r in range(repeats):
            start = time.perf_counter()
            simulate(data, artifact, 0.7, header, seed=r)
            sync()
            best = min(best, time.perf_counter() - start)
        rates[artifact] = batch.shape[0] / best
        print(f"{xp.__name__:5s} {artifact:15s} {rates[artifact]:9.1f} slices/s", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    batch = phantom(args.batch)
    print(f"batch {args.batch} x {ROWS}x{COLUMNS}, severity 0.7, best of {args.repeats}")
    cpu = time_backend(np, batch, args.repeats)
    total_cpu = len(cpu) / sum(1.0 / v for v in cpu.values())
    print(f"numpy all ten types: {total_cpu:.1f} slices/s (harmonic mean)")
    if not cupy_available():
        print("cupy: not available (CuPy or a CUDA device is missing); no GPU figures")
        return
    cupy, _ = optional_import("cupy")
    gpu = time_backend(cupy, batch, args.repeats)
    for artifact in ARTIFACT_TYPES:
        print(f"ratio {artifact:15s} cupy/numpy = {gpu[artifact] / cpu[artifact]:6.1f}x")
    total_gpu = len(gpu) / sum(1.0 / v for v in gpu.values())
    print(f"cupy all ten types: {total_gpu:.1f} slices/s; ratio {total_gpu / total_cpu:.1f}x")


if __name__ == "__main__":
    main()
