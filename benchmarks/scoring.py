"""Live scoring latency: one slice from STOW-RS to its ``instance.scored`` event, and a 32-slice
384×512 series from STOW-RS to ``series.scored``, through a real web server and scoring worker.

    .venv/bin/python benchmarks/scoring.py [--slices 50] [--series-slices 32]

Runs on a scratch embedded installation (or DATABASE_URL/REDIS_URL if set); prints median and
p95 per-slice latency, the series time, and the worker's peak resident memory.
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
from pathlib import Path

import requests
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import ROOT, free_port, make_series, peak_rss_mb, wait_port

BOUNDARY = "bench"


def stow(server: str, token: str, data: bytes) -> str:
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    r = requests.post(
        f"{server}/dicomweb/studies",
        data=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        },
        timeout=120,
    )
    r.raise_for_status()
    return str(r.json()["00081199"]["Value"][0]["00081155"]["Value"][0])


async def measure(server: str, token: str, singles: list[bytes], series: list[bytes]) -> None:
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
        for i, data in enumerate(singles):
            start = time.perf_counter()
            sop = await loop.run_in_executor(None, stow, server, token, data)
            await asyncio.wait_for(until("instance.scored", "sop_uid", sop), 120)
            latencies.append(time.perf_counter() - start)
            if i == 0:
                print(f"  first slice (cold worker: model load) {latencies[0] * 1000:.0f} ms")
        warm = sorted(latencies[1:])
        p95 = warm[int(0.95 * (len(warm) - 1))]
        median = statistics.median(warm)
        print(
            f"one slice STOW-RS -> instance.scored: median {median * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms over {len(warm)} warm slices"
        )

        start = time.perf_counter()
        sops = [await loop.run_in_executor(None, stow, server, token, d) for d in series]
        sent = time.perf_counter() - start
        remaining = set(sops)
        while remaining:
            event = json.loads(await asyncio.wait_for(ws.recv(), 300))
            if event["kind"] == "instance.scored":
                remaining.discard(event["data"].get("sop_uid"))
        total = time.perf_counter() - start
        print(f"{len(series)}-slice 384x512 series: sent in {sent:.2f} s, all slices scored "
              f"{total:.2f} s after the first byte")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=50)
    parser.add_argument("--series-slices", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="artiscan-score-bench-"))
    env = dict(os.environ)
    env.setdefault("ARTISCAN_VAR_DIR", str(work / "var"))
    env["PYTHONPATH"] = str(ROOT)
    py = [sys.executable]
    procs: list[subprocess.Popen] = []
    try:
        subprocess.run([*py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        token = subprocess.run(
            [*py, "manage.py", "shell", "-v0", "-c",
             "from backend.accounts.models import Site, Role\n"
             "from backend.accounts.services import site_create, user_create, token_create\n"
             "import uuid\n"
             "site = site_create(name='Bench ' + uuid.uuid4().hex[:6], slug=uuid.uuid4().hex[:8])\n"
             "u = user_create(username='bench-' + uuid.uuid4().hex[:8], password=None, "
             "memberships=[(site, Role.OPERATOR)])\n"
             "print(token_create(user=u, name='bench')[1])"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        port = free_port()
        web = subprocess.Popen(
            [*py, "-m", "daphne", "-p", str(port), "backend.config.asgi:application"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        worker = subprocess.Popen(
            [*py, "-m", "celery", "-A", "backend.config", "worker", "-Q", "cpu,gpu", "-c", "1",
             "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs += [web, worker]
        wait_port(port, web, "daphne")
        singles = make_series(args.slices)
        series = make_series(args.series_slices)
        asyncio.run(measure(f"http://127.0.0.1:{port}", token, singles, series))
        print(f"peak RSS: scoring worker {peak_rss_mb(worker.pid):.0f} MiB, "
              f"web {peak_rss_mb(web.pid):.0f} MiB")  # fmt: skip
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
