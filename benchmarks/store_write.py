"""The ingest door's file writes (``backend.storage.store.OwnedWrites`` on the local store):
every file of a batch encrypted into one reused buffer, against a fresh buffer per file (what
the S3 backend still gets, and what the local store did before), same files, same process, same
run, rounds interleaved.

    .venv/bin/python benchmarks/store_write.py [--batches 20] [--batch 50] [--rounds 3]
        [--file-kb 395] [--threshold BYTES]

Files default to the size of ``benchmarks/ingest.py``'s 384 x 512 16-bit MR slice. The process
runs with glibc's fixed mmap threshold of ``manage.py serve``'s daphne processes (1 MiB;
``--threshold`` another, e.g. 131072, the one they had before), re-executing itself with it:
a buffer above it is a fresh mapping, faulted in page by page and unmapped when freed, one below
it comes from the heap. Prints, per path, the median over rounds of CPU time (all threads, user
+ system) and wall time per file, and the minor page faults per file, then the ratio. The
store is a scratch directory; what is written is synced as in production (one shared
``syncfs`` per batch).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILE_KB = (384 * 512 * 2 + 2_000) // 1000  # pixel data and a header


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="batches per path and round")
    parser.add_argument("--batch", type=int, default=50, help="files per batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--file-kb", type=int, default=FILE_KB, help="size of each file, kB")
    parser.add_argument("--threshold", type=int, default=None, help="mmap threshold, bytes")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from backend.ingest.management.commands.serve import MMAP_THRESHOLD

    threshold = str(args.threshold or MMAP_THRESHOLD)
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != threshold:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": threshold}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    file_bytes = args.file_kb * 1000

    scratch = Path(tempfile.mkdtemp(prefix="artiscan-store-bench-"))
    os.environ["ARTISCAN_VAR_DIR"] = str(scratch / "var")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.config.settings")
    import django

    django.setup()
    from backend.storage.store import LocalBackend, OwnedWrites, backend

    if not isinstance(backend(), LocalBackend):
        raise SystemExit("this measures the local store (ARTISCAN_STORAGE_BACKEND unset)")
    files = [os.urandom(file_bytes) for _ in range(args.batch)]
    paths = {"one reused buffer": True, "a buffer per file": False}
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in paths}
    print(
        f"{args.batches} batches of {args.batch} files of {file_bytes / 1e6:.2f} MB per path "
        f"and round, {args.rounds} rounds; MALLOC_MMAP_THRESHOLD_="
        f"{os.environ['MALLOC_MMAP_THRESHOLD_']}",
        flush=True,
    )
    serial = 0
    for _ in range(args.rounds):
        for name, reuse in paths.items():
            LocalBackend.writes_one_at_a_time = reuse
            os.sync()  # what earlier rounds left unwritten is not this path's to write
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(args.batches):
                serial += 1
                writes = OwnedWrites()
                writes.add([(f"bench/{serial}/{i}.dcm", data) for i, data in enumerate(files)])
                writes.wait()
            n = args.batches * args.batch
            figures[name].append(
                (
                    (time.process_time() - cpu) / n * 1e3,
                    (time.perf_counter() - wall) / n * 1e3,
                    (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / n,
                )
            )
    LocalBackend.writes_one_at_a_time = True
    print(f"{'path':22s} {'CPU ms/file':>12s} {'wall ms/file':>13s} {'page faults/file':>17s}")
    medians = {}
    for name, rows in figures.items():
        medians[name] = [statistics.median(r[j] for r in rows) for j in range(3)]
        cpu_ms, wall_ms, faults_per_file = medians[name]
        print(f"{name:22s} {cpu_ms:12.3f} {wall_ms:13.3f} {faults_per_file:17.1f}")
    new, old = medians["one reused buffer"], medians["a buffer per file"]
    print(f"ratio (per file / reused): CPU {old[0] / new[0]:.2f}x, wall {old[1] / new[1]:.2f}x")
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
