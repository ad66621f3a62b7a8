"""Request latency over HTTP: the served ASGI application (every request through
``OneHopHandler``: Django's middleware chain in sync mode, one hop to the request's thread)
against Django's own ASGI handler (its middleware chain in async mode) on the same pooled
request threads (``django_pooled_app``: what served every request but STOW-RS before the one
hop), each under daphne on the same scratch installation, in the same run.

    .venv/bin/python benchmarks/http_latency.py [--requests 100] [--rounds 2]

One client (a keep-alive ``requests`` session) sends, one after another: ``GET /health/``,
``GET /api/me/`` (token authentication, a small DRF answer), a WADO-RS frame and a WADO-RS
instance's metadata (what the viewer asks for, slice after slice) and STOW-RS of one 384x512
slice. Prints the median and the 90th percentile of each, per application, and their ratio;
with ``--rounds N`` the applications take turns N times and each figure is the median over the
rounds (a shared machine's load drifts).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import ROOT, free_port, load, make_series, operator_token, wait_port

APPS = {
    "served (one hop)": "backend.config.asgi:application",
    "Django's handler, pooled": "backend.config.asgi:django_pooled_app",
}
MULTIPART = 'multipart/related; type="application/dicom"; boundary=b'


def timings(call: Callable[[int], requests.Response], n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        response = call(i)
        out.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise RuntimeError(f"{response.url} answered {response.status_code}")
    return out


def measure(port: int, token: str, files: list[bytes], n: int) -> dict[str, tuple[float, float]]:
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {token}"}
    dicom_json = {**auth, "Accept": "application/dicom+json"}
    stow_headers = {**dicom_json, "Content-Type": MULTIPART}
    figures: dict[str, list[float]] = {}
    with requests.Session() as http:

        def stow(i: int) -> requests.Response:
            body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + files[i] + b"\r\n--b--\r\n"
            return http.post(f"{base}/dicomweb/studies", data=body, headers=stow_headers)

        for _ in range(3):  # the process' first requests pay its imports and connections
            http.get(f"{base}/health/")
        figures["STOW-RS 1 slice"] = timings(stow, n)
        found = http.get(f"{base}/dicomweb/instances?limit=1", headers=dicom_json).json()[0]
        study, series, sop = (
            found[tag]["Value"][0] for tag in ("0020000D", "0020000E", "00080018")
        )
        instance = f"{base}/dicomweb/studies/{study}/series/{series}/instances/{sop}"
        frame = {**auth, "Accept": 'multipart/related; type="application/octet-stream"'}
        figures["GET /health/"] = timings(lambda i: http.get(f"{base}/health/"), n)
        figures["GET /api/me/"] = timings(lambda i: http.get(f"{base}/api/me/", headers=auth), n)
        figures["WADO-RS frame"] = timings(
            lambda i: http.get(f"{instance}/frames/1", headers=frame), n
        )
        figures["WADO-RS metadata"] = timings(
            lambda i: http.get(f"{instance}/metadata", headers=dicom_json), n
        )
    return {
        what: (statistics.median(ts), sorted(ts)[int(0.9 * (len(ts) - 1))])
        for what, ts in figures.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="requests of each kind")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="artiscan-http-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(PYTHONPATH=str(ROOT), ARTISCAN_VAR_DIR=str(work / "var"))
    py = [sys.executable, "manage.py"]
    print(f"{args.requests} requests of each kind, one client, daphne; {load()}")
    try:
        subprocess.run([*py, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        token = operator_token(env)
        runs: dict[str, list[dict[str, tuple[float, float]]]] = {app: [] for app in APPS}
        for r in range(args.rounds):
            order = list(APPS) if r % 2 == 0 else list(reversed(APPS))
            for app in order:
                port = free_port()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                     APPS[app]],
                    cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    wait_port(port, proc, app)
                    runs[app].append(
                        measure(port, token, make_series(args.requests), args.requests)
                    )
                finally:
                    proc.terminate()
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    served, django = (
        {
            what: tuple(statistics.median(run[what][k] * 1000 for run in runs[app]) for k in (0, 1))
            for what in runs[app][0]
        }
        for app in APPS
    )
    names = list(APPS)
    print(f"\n{'request':<20}{names[0] + ' ms':>26}{names[1] + ' ms':>30}{'ratio':>8}")
    print(f"{'':<20}{'median   p90':>26}{'median   p90':>30}")
    for what in served:
        (m1, p1), (m2, p2) = served[what], django[what]
        print(f"{what:<20}{m1:>18.1f}{p1:>8.1f}{m2:>22.1f}{p2:>8.1f}{m1 / m2:>7.2f}x")
    print(load())
    return 0


if __name__ == "__main__":
    sys.exit(main())
