"""Score a 32-slice 384 x 512 DICOM series on a GPU: full vs pruned Keras model, batch 32.

Meant for the GPU box the device tool lends (Keras 3 on the JAX backend, CuPy for the pre- and
post-processing); runs on a CPU too (JAX on the CPU, NumPy), where the GPU memory columns stay
empty. Each model runs in a fresh Python process that does what ``python -m ml score`` does —
imports the pipeline, loads the weights, reads and decodes the DICOM files, scores them — with
``--batch`` slices per model call, then scores the same series ``--repeat`` times warm. Prints
seconds (load, cold score = first series with the XLA compilation, warm score median), the
peak device memory the JAX allocator handed out (``peak_bytes_in_use``; the allocator is told
not to preallocate; compilation and autotuning scratch included), what XLA's compiled plan of one
model call at that batch needs (temporaries, inputs and outputs; on the CPU too), CuPy's pool,
the pruned/full ratio and the ratio to the case study's 45 s on two K80 GPUs. Where the
network's outputs stay on the GPU (Keras on JAX handing them to CuPy through DLPack,
``KerasProbabilities.predict_on_device``) it also times the same process through the host and
says whether both gave the same mask bytes. ``--profile`` prints where one more warm run spends
its time; ``--second-process`` scores each model again in a fresh process that finds XLA's
compiled programs in the cache (a peak without compilation or autotuning scratch). Figures
only; nothing is asserted.

    KERAS_BACKEND=jax python benchmarks/gpu_score.py [--models full pruned] [--batch 32] \
        [--profile] [--second-process]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from score import CASE_STUDY_SECONDS, write_series  # noqa: E402 - the score benchmark's series

CHILD = r"""
import json, statistics, sys, time
t0 = time.perf_counter()
from pathlib import Path
from ml.pipeline import ScoringPipeline
pipeline = ScoringPipeline.load(sys.argv[1])
pipeline.batch_size = int(sys.argv[3])
t1 = time.perf_counter()
result = pipeline.score_series_dir(sys.argv[2])
t2 = time.perf_counter()
warm = []
for _ in range(int(sys.argv[4])):
    start = time.perf_counter()
    pipeline.score_series_dir(sys.argv[2])
    warm.append(time.perf_counter() - start)
# The probabilities kept on the GPU (Keras on JAX -> CuPy through DLPack), against the host
# copies the pipeline made before: both timed, and the masks must be the same bytes.
device_path = host_warm = host_equal = None
keeper = getattr(pipeline.model, "_on_device", None)
if keeper is not None:
    device_path = keeper is not False
    if device_path:
        import numpy as np
        pipeline.model._on_device = False
        host = pipeline.score_series_dir(sys.argv[2])
        times = []
        for _ in range(3):
            start = time.perf_counter()
            pipeline.score_series_dir(sys.argv[2])
            times.append(time.perf_counter() - start)
        host_warm = statistics.median(times)
        host_equal = bool(np.array_equal(host.masks, result.masks)) and bool(
            np.allclose(host.suitability, result.suitability, atol=1e-6))
        pipeline.model._on_device = keeper
profile = None
if sys.argv[5] == "1":  # one more warm run under cProfile: where the time of a run goes
    import cProfile, io, pstats
    profiler = cProfile.Profile()
    profiler.enable()
    pipeline.score_series_dir(sys.argv[2])
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
    profile = text.getvalue()
import keras
out = {"backend": keras.backend.backend(), "load_s": t1 - t0, "cold_score_s": t2 - t1,
       "warm_score_s": statistics.median(warm), "slices": len(result.sop_instance_uid),
       "xp": pipeline.xp.__name__, "device": None, "gpu_peak_mb": None, "cupy_pool_mb": None,
       "xla_temp_mb": None, "xla_io_mb": None, "profile": profile,
       "device_path": device_path, "host_warm_s": host_warm, "host_equal": host_equal}
if out["backend"] == "jax":
    import jax
    device = jax.local_devices()[0]
    out["device"] = f"{device.platform}:{getattr(device, 'device_kind', '')}"
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["gpu_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    # What XLA plans for one model call at this batch, apart from the allocator's peak (which
    # also holds compilation and autotuning scratch): its temporaries, arguments and outputs.
    import numpy as np
    from ml.model.preprocess import working_shape
    rows, cols = result.masks.shape[2:]
    if pipeline.working_size:
        rows, cols = working_shape(rows, cols, pipeline.working_size)
    batch = {"image": np.zeros((pipeline.batch_size, rows, cols, 1), np.float32),
             "header": np.zeros((pipeline.batch_size, 8), np.float32)}
    model = getattr(pipeline.model, "model", pipeline.model)  # KerasProbabilities: the network
    plan = jax.jit(lambda x: model(x, training=False)).lower(batch).compile().memory_analysis()
    if plan is not None:
        out["xla_temp_mb"] = plan.temp_size_in_bytes / 2**20
        out["xla_io_mb"] = (plan.argument_size_in_bytes + plan.output_size_in_bytes) / 2**20
if pipeline.xp.__name__ == "cupy":
    out["cupy_pool_mb"] = pipeline.xp.get_default_memory_pool().total_bytes() / 2**20
print(json.dumps(out))
"""


def run_model(
    weights: Path,
    series: Path,
    batch: int,
    repeat: int,
    profile: bool = False,
    cache: Path | None = None,
) -> dict[str, object]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONPATH=path)
    env.setdefault("KERAS_BACKEND", "jax")
    if cache is not None:  # XLA's compiled programs kept for the next process
        env.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache))
        env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(weights), str(series), str(batch), str(repeat),
         "1" if profile else "0"],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{weights.name}: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["full", "pruned"])
    parser.add_argument("--weights-dir", type=Path, default=ROOT / "ml" / "weights")
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32, help="slices per model call")
    parser.add_argument("--repeat", type=int, default=5, help="warm runs (median reported)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print where one more warm run spends its time (cProfile: top 25 cumulative, 15 own)",
    )
    parser.add_argument(
        "--second-process",
        action="store_true",
        help="score each model again in a second fresh process that finds XLA's compiled "
        "programs in the compilation cache: its JAX peak holds no compilation or autotuning "
        "scratch (the memory a scoring process needs), its cold run no compilation",
    )
    args = parser.parse_args()
    rows: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        series = Path(tmp) / "series"
        series.mkdir()
        write_series(series, args.slices)
        for name in args.models:
            shipped = args.weights_dir / f"artiscan-{name}.keras"
            path = Path(name) if name.endswith(".keras") else shipped
            # Only a second process needs the first one's compiled programs kept.
            cache = Path(tmp) / "xla-cache" if args.second_process else None
            rows[name] = run_model(path, series, args.batch, args.repeat, args.profile, cache)
            r = rows[name]
            gpu = "-" if r["gpu_peak_mb"] is None else f"{r['gpu_peak_mb']:.0f} MB"
            pool = "-" if r["cupy_pool_mb"] is None else f"{r['cupy_pool_mb']:.0f} MB"
            plan = (
                "-"
                if r["xla_temp_mb"] is None
                else f"{r['xla_temp_mb']:.0f} MB temporaries + {r['xla_io_mb']:.0f} MB in/out"
            )
            warm = float(r["warm_score_s"])  # type: ignore[arg-type]
            print(
                f"{name:8s} {r['backend']}/{r['device']} xp={r['xp']} batch {args.batch}: "
                f"load {r['load_s']:.2f} s, cold {r['cold_score_s']:.2f} s, "
                f"warm {warm:.3f} s ({r['slices']} slices), JAX peak {gpu}, XLA's plan for one "
                f"call {plan}, CuPy pool {pool}, "
                f"case study 45 s / warm = {CASE_STUDY_SECONDS / warm:.0f}x",
                flush=True,
            )
            if r.get("device_path") is not None:
                print(
                    f"{name:8s} outputs kept on the GPU: {r['device_path']}; through the host "
                    f"instead: warm {r['host_warm_s']} s, same masks: {r['host_equal']}",
                    flush=True,
                )
            if r.get("profile"):
                print(r["profile"], flush=True)
            if args.second_process:
                again = run_model(path, series, args.batch, args.repeat, cache=cache)
                peak = again["gpu_peak_mb"]
                print(
                    f"{name:8s} second process (compiled programs from the cache): load "
                    f"{again['load_s']:.2f} s, cold {again['cold_score_s']:.2f} s, warm "
                    f"{again['warm_score_s']:.3f} s, JAX peak "
                    f"{'-' if peak is None else f'{peak:.0f} MB'}",
                    flush=True,
                )
    if "full" in rows and "pruned" in rows:
        ratio = statistics.fmean(
            [float(rows["pruned"]["warm_score_s"]) / float(rows["full"]["warm_score_s"])]  # type: ignore[arg-type]
        )
        print(f"pruned/full warm: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
