"""Scoring benchmarks, through real processes:

- latency: one slice from STOW-RS to its ``instance.scored`` event (median and p95), and a
  32-slice 384x512 series from STOW-RS to its ``series.scored`` event, through a real web server
  and one scoring worker. The series is sent the way the workstation client sends files that
  are all waiting (``workstation.take_batch``/``stow_many``): ``--sending 8x2`` is up to 8 files
  per STOW-RS request with 2 requests under way; ``1x1`` is one slice per request, serially;
- throughput: slices/s with 1, 2 and 4 scoring worker processes in site mode (PostgreSQL +
  Redis), with each worker's peak resident memory; ``--layouts classic enhanced`` measures the
  same slices sent as classic instances and as one Enhanced MR instance per series (scored
  frame by frame), in the same run.

    .venv/bin/python benchmarks/scoring.py [latency] [throughput] [--weights pruned-onnx]
        [--slices 50] [--series-slices 32] [--sending 1x1 8x2 16x2 32x1] [--workers 1 2 4]
        [--series 8] [--per-series 8] [--layouts classic enhanced]

Every part runs on a scratch installation: a fresh PostgreSQL database on DATABASE_URL's server
(dropped at the end) and REDIS_URL when both are set, else (latency only) the embedded SQLite
mode. The weights (default: the pruned model, ONNX) are the initial deployed version of that
scratch database. Throughput: the workers are started and warmed up (each scores a slice, so
the model is loaded), then ``--series`` x ``--per-series`` 384x512 slices are ingested in one
transaction and the time from the first slice claimed to the last score written is measured
(database timestamps). Each worker gets ``cores / workers`` inference threads (at least one).
Figures print; nothing is asserted. The machine's CPU is shared: expect ±50 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tqdm import tqdm
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import ROOT, free_port, make_enhanced, make_series, peak_rss_mb, wait_port

sys.path.insert(0, str(ROOT))
from workstation.__main__ import stow_many, take_batch

PY = [sys.executable]
SEG_WAIT_S = 5
"""More than ``backend.scoring.services.SEG_DELAY_S`` (importing it would need Django)."""


# --- scratch installation ------------------------------------------------------------------


@contextmanager
def scratch(weights: str) -> Iterator[dict[str, str]]:
    """Environment of a fresh installation: scratch var dir, and a scratch PostgreSQL database
    when DATABASE_URL is set (dropped afterwards)."""
    work = Path(tempfile.mkdtemp(prefix="artiscan-score-bench-"))
    env = dict(os.environ)
    env["ARTISCAN_VAR_DIR"] = str(work / "var")
    env["ARTISCAN_MODEL_WEIGHTS"] = weights
    env["PYTHONPATH"] = str(ROOT)
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    admin_url, name = None, f"artiscan_bench_{uuid.uuid4().hex[:8]}"
    if os.environ.get("DATABASE_URL"):
        import psycopg

        parts = urlsplit(os.environ["DATABASE_URL"])
        admin_url = urlunsplit(parts._replace(path="/postgres"))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        env["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        subprocess.run([*PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        yield env
    finally:
        if admin_url is not None:
            import psycopg

            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)


def setup_site(env: dict[str, str]) -> str:
    """A site with an operator; prints the operator's API token. Deploys the configured weights."""
    return subprocess.run(
        [*PY, "manage.py", "shell", "-v0", "-c",
         "from backend.accounts.models import Role\n"
         "from backend.accounts.services import site_create, user_create, token_create\n"
         "from backend.scoring.services import model_version_deployed\n"
         "import uuid\n"
         "print(model_version_deployed(), file=__import__('sys').stderr)\n"
         "site = site_create(name='Bench ' + uuid.uuid4().hex[:6], slug=uuid.uuid4().hex[:8])\n"
         "u = user_create(username='bench-' + uuid.uuid4().hex[:8], password=None, "
         "memberships=[(site, Role.OPERATOR)])\n"
         "print(token_create(user=u, name='bench')[1])"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def start_worker(env: dict[str, str], queues: str, threads: int, log: Path) -> subprocess.Popen:
    env = {**env, "ARTISCAN_INFERENCE_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*PY, "-m", "celery", "-A", "backend.config", "worker", "-Q", queues, "-c", "1",
             "--without-gossip", "--without-mingle", "--loglevel", "WARNING",
             "-n", f"bench-{uuid.uuid4().hex[:8]}@%h"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- latency -------------------------------------------------------------------------------


async def measure_latency(
    server: str,
    token: str,
    singles: list[bytes],
    series: list[bytes],
    sending: list[tuple[int, int]],
) -> None:
    ws_url = server.replace("http://", "ws://") + "/ws/events/"
    async with connect(ws_url, additional_headers={"Origin": server}) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        await ws.recv()
        loop = asyncio.get_running_loop()

        async def until(kind: str, key: str, value: str) -> None:
            while True:
                event = json.loads(await ws.recv())
                if event["kind"] == kind and event["data"].get(key) == value:
                    return

        latencies = []
        for i, data in enumerate(tqdm(singles, desc="single slices", unit="slice")):
            start = time.perf_counter()
            sop = (await loop.run_in_executor(None, stow_many, server, token, [data]))[0]["sop_uid"]
            await asyncio.wait_for(until("instance.scored", "sop_uid", sop), 120)
            latencies.append(time.perf_counter() - start)
            if i == 0:
                tqdm.write(f"  first slice (cold worker: model load) {latencies[0] * 1000:.0f} ms")
        warm = sorted(latencies[1:])
        p95 = warm[int(0.95 * (len(warm) - 1))]
        median = statistics.median(warm)
        print(
            f"one slice STOW-RS -> instance.scored: median {median * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms over {len(warm)} warm slices (load {load()})"
        )

        # The worker's first batches of 8 and 16 slices pay ONNX Runtime's one-time allocations
        # (seconds, once per process); single slices never made one. Not measured.
        await send_series(server, token, make_series(len(series)), ws, 16, 1)
        await asyncio.sleep(SEG_WAIT_S)  # and its SEG is built before the next series
        for max_files, in_flight in sending:
            data = make_series(len(series))  # a new series each time (new UIDs)
            sent, total = await send_series(server, token, data, ws, max_files, in_flight)
            print(f"{len(data)}-slice 384x512 series, {max_files} file(s) per request, "
                  f"{in_flight} in flight: sent in {sent:.2f} s, series.scored with every slice "
                  f"{total:.2f} s after the first byte (load {load()})")  # fmt: skip
            await asyncio.sleep(SEG_WAIT_S)  # series come minutes apart: its SEG is built now


async def send_series(
    server: str, token: str, data: list[bytes], ws: Any, max_files: int, in_flight: int
) -> tuple[float, float]:
    """Send ``data`` (all waiting at once, as a scanner export that wrote them) the way the
    workstation client does; seconds until the last answer and until ``series.scored`` covers
    every slice."""
    loop = asyncio.get_running_loop()
    paths = [Path(f"slice{i}") for i in range(len(data))]
    blobs = dict(zip(paths, data, strict=True))
    sizes = {p: len(b) for p, b in blobs.items()}
    waiting = list(paths)
    sops: list[str] = []
    start = time.perf_counter()

    async def one(batch: list[Path]) -> None:
        results = await loop.run_in_executor(
            None, stow_many, server, token, [blobs[p] for p in batch]
        )
        sops.extend(r["sop_uid"] for r in results)

    under_way: set[asyncio.Task[None]] = set()
    while waiting or under_way:
        while waiting and len(under_way) < in_flight:
            under_way.add(asyncio.create_task(one(take_batch(waiting, sizes, max_files))))
        finished, under_way = await asyncio.wait(under_way, return_when=asyncio.FIRST_COMPLETED)
        for task in finished:
            task.result()
    sent = time.perf_counter() - start
    remaining, series_id = set(sops), None
    scored: set[str] = set()
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 300))
        data_ = event["data"]
        if event["kind"] == "instance.scored" and data_.get("sop_uid") in remaining:
            scored.add(data_["sop_uid"])
            series_id = data_["series_id"]
        elif (
            event["kind"] == "series.scored"
            and scored == remaining
            and data_["series_id"] == series_id
        ):
            break
    return sent, time.perf_counter() - start


def peak_mb(pid: int) -> float:
    """Peak RSS of ``pid`` (or of the largest of its processes) in MiB."""
    value: Any = peak_rss_mb(pid)
    return float(max(value)) if isinstance(value, list) else float(value)


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def latency(args: argparse.Namespace) -> None:
    print(f"== latency ({args.weights}, one worker) ==")
    with scratch(args.weights) as env:
        token = setup_site(env)
        port = free_port()
        procs = []
        try:
            logs = Path(tempfile.mkdtemp(prefix="artiscan-score-bench-logs-"))
            print(f"  server and worker logs in {logs}")
            with open(logs / "web.log", "wb") as out:
                web = subprocess.Popen(
                    [*PY, "-m", "daphne", "-p", str(port), "backend.config.asgi:application"],
                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            procs.append(web)
            worker = start_worker(env, "cpu,gpu", os.cpu_count() or 1, logs / "worker.log")
            procs.append(worker)
            wait_port(port, web, "daphne")
            singles = make_series(args.slices)
            series = make_series(args.series_slices)
            sending = [(int(a), int(b)) for a, b in (x.split("x") for x in args.sending)]
            asyncio.run(
                measure_latency(f"http://127.0.0.1:{port}", token, singles, series, sending)
            )
            print(f"peak RSS: scoring worker {peak_mb(worker.pid):.0f} MiB, "
                  f"web {peak_mb(web.pid):.0f} MiB")  # fmt: skip
        finally:
            stop(procs)


# --- throughput ----------------------------------------------------------------------------


def _django(env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _ingest(site_id: int, series: list[list[bytes]]) -> list[str]:
    from django.db import transaction

    from backend.accounts.models import Site
    from backend.ingest.services import series_ingest

    site = Site.objects.get(pk=site_id)
    with transaction.atomic():  # every scoring task is enqueued at the commit
        outcomes = [
            o for files in series for o in series_ingest(site=site, files=files, source="upload")
        ]
    return sorted({str(o.series_id) for o in outcomes if getattr(o, "series_id", None)})


def _wait_scored(series_ids: list[str], total: int, desc: str) -> None:
    from backend.scoring.models import InstanceScore

    with tqdm(total=total, desc=desc, unit="slice", leave=False) as bar:
        while bar.n < total:
            done = InstanceScore.objects.filter(instance__series_id__in=series_ids).count()
            bar.update(done - bar.n)
            time.sleep(0.2)


def throughput(args: argparse.Namespace) -> None:
    if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        sys.exit("throughput runs in site mode: set DATABASE_URL (PostgreSQL) and REDIS_URL")
    cores = os.cpu_count() or 1
    print(f"== throughput ({args.weights}, site mode: PostgreSQL + Redis, {cores} cores) ==")
    with scratch(args.weights) as env:
        setup_site(env)
        _django(env)
        from django.db.models import Max, Min

        from backend.accounts.models import Site
        from backend.config.celery import app
        from backend.scoring.models import InstanceScore, SliceAttempt

        app.control.purge()
        site_id = Site.objects.order_by("-pk").values_list("pk", flat=True)[0]
        results = []
        for n in args.workers:
            threads = max(1, cores // n)
            log = Path(env["ARTISCAN_VAR_DIR"]) / f"workers-{n}.log"
            workers = [start_worker(env, "gpu", threads, log) for _ in range(n)]
            try:
                warm = [make_series(1) for _ in range(2 * n)]
                ids = _ingest(site_id, warm)
                _wait_scored(ids, len(warm), f"{n} workers: warm-up")
                for layout in args.layouts:
                    if layout == "enhanced":
                        batch = [[make_enhanced(args.per_series)] for _ in range(args.series)]
                    else:
                        batch = [make_series(args.per_series) for _ in range(args.series)]
                    total = args.series * args.per_series
                    ids = _ingest(site_id, batch)
                    _wait_scored(ids, total, f"{n} workers, {layout}: {total} slices")
                    # Claims are saved when taken (the write phase does not touch updated_at).
                    start = SliceAttempt.objects.filter(instance__series_id__in=ids).aggregate(
                        t=Min("updated_at")
                    )["t"]
                    end = InstanceScore.objects.filter(instance__series_id__in=ids).aggregate(
                        t=Max("created_at")
                    )["t"]
                    seconds = (end - start).total_seconds()
                    rss = [peak_mb(w.pid) for w in workers]
                    results.append((n, layout, total / seconds, seconds, rss))
                    print(
                        f"{n} worker(s) x {threads} thread(s), {layout}: "
                        f"{total / seconds:.2f} slices/s ({total} slices in {seconds:.1f} s); "
                        "peak RSS per worker " + ", ".join(f"{r:.0f}" for r in rss) + " MiB"
                    )
            finally:
                stop(workers)
        if not results:
            return
        base_n, base_layout, base, _, _ = results[0]
        for n, layout, rate, _, _ in results:
            print(
                f"  {n} worker(s), {layout}: {rate / base:.2f}x the throughput of "
                f"{base_n} worker(s), {base_layout}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", help="latency, throughput (default: both)")
    parser.add_argument("--weights", default="pruned-onnx", help="a shipped name or a path")
    parser.add_argument("--slices", type=int, default=50)
    parser.add_argument("--series-slices", type=int, default=32)
    parser.add_argument(
        "--sending",
        nargs="+",
        default=["1x1", "8x2", "16x2", "32x1"],
        help="how the series goes up, each FILESxIN_FLIGHT: files per STOW-RS request and "
        "requests under way at once (1x1: one slice per request, serially; the workstation "
        "client's default is 8x2)",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--series", type=int, default=8)
    parser.add_argument("--per-series", type=int, default=8)
    parser.add_argument(
        "--layouts",
        nargs="+",
        choices=["classic", "enhanced"],
        default=["classic"],
        help="throughput: the series as classic instances, as one Enhanced MR instance each",
    )
    args = parser.parse_args()
    parts = args.parts or ["latency", "throughput"]
    if set(parts) - {"latency", "throughput"}:
        parser.error(f"unknown part(s): {sorted(set(parts) - {'latency', 'throughput'})}")
    if "latency" in parts:
        latency(args)
    if "throughput" in parts:
        throughput(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
