"""Ingest throughput: ArtiScan (STOW-RS and C-STORE, de-identification included) against a real
Orthanc (REST upload, its own STOW-RS from Debian's orthanc-dicomweb plugin when installed, and
C-STORE) on the same kind of files, same machine, same run.

    .venv/bin/python benchmarks/ingest.py [--instances 500] [--clients 4] [--batch 50]
                                          [--workers N] [--skip-cstore]

Starts everything it measures itself: ArtiScan's web server twice (one daphne process, as before,
and ``manage.py serve --workers N``, several daphne processes on one port) and its C-STORE SCP on
a scratch embedded installation (or on DATABASE_URL/REDIS_URL if set), and Orthanc from Debian's
packages with a temporary configuration. Every path gets a fresh series (new UIDs), so nothing is
a duplicate. STOW-RS is measured with one instance per request and with ``--batch`` instances per
multipart request (the natural DICOMweb way); Orthanc's REST API takes one instance per request.
Prints instances/s for each path, serial and with concurrent clients, the ratio to Orthanc, and
the peak resident memory of each server process.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
MR = "1.2.840.10008.5.1.4.1.1.4"


def make_series(n: int, rows: int = 384, columns: int = 512) -> list[bytes]:
    """``n`` MR instances of one series, 16-bit ``rows`` x ``columns``, as Part 10 bytes."""
    rng = np.random.default_rng(0)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    files = []
    base = (rng.random((rows, columns)) * 3000).astype(np.uint16)
    for i in range(n):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = MR, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "BENCH^PATIENT", "BENCH-1", "19700101"
        ds.Modality, ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "MR", "20260101", 1, i + 1
        ds.MagneticFieldStrength, ds.PixelBandwidth, ds.InPlanePhaseEncodingDirection = (
            3,
            130,
            "ROW",
        )
        ds.EchoTime, ds.RepetitionTime, ds.PixelSpacing = 90, 4000, [0.5, 0.5]
        ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.roll(base, i, axis=0).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MR, ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        files.append(out.getvalue())
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(what)


def peak_rss_mb(pid: int) -> float:
    """VmHWM of ``pid`` and its children (daphne runs Django in one process)."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]))
        except OSError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def run_clients(
    files: list[bytes], clients: int, send: Callable[[int, list[bytes]], None]
) -> float:
    """Send ``files`` split among ``clients`` threads; returns instances per second. A failed
    request fails the run (a thread that died early would make the rate look better)."""
    shares = [files[i::clients] for i in range(clients)]
    errors: list[BaseException] = []

    def guarded(i: int, share: list[bytes]) -> None:
        try:
            send(i, share)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i, s)) for i, s in enumerate(shares)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return len(files) / (time.perf_counter() - start)


def cstore_sender(port: int, calling: str, called: str) -> Callable[[int, list[bytes]], None]:
    def send(_: int, share: list[bytes]) -> None:
        ae = AE(ae_title=calling)
        ae.add_requested_context(MR, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title=called)
        if not assoc.is_established:
            raise RuntimeError(f"association to {called} refused")
        for data in share:
            status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(data)))
            if status.Status != 0:
                raise RuntimeError(f"C-STORE status {status.Status:#06x}")
        assoc.release()

    return send


def stow_sender(
    url: str, batch: int, token: str | None, sessions: dict[str, requests.Session]
) -> Callable[[int, list[bytes]], None]:
    """Multipart/related STOW-RS requests of ``batch`` instances each to ``url``."""
    boundary = "benchboundary"
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"

    def send(i: int, share: list[bytes]) -> None:
        http = sessions.setdefault(f"{url}/{i}", requests.Session())
        for start in range(0, len(share), batch):
            chunk = share[start : start + batch]
            body = bytearray()
            for data in chunk:
                body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                body += data + b"\r\n"
            body += f"--{boundary}--\r\n".encode()
            r = http.post(url, data=bytes(body), headers=headers, timeout=300)
            if r.status_code != 200:
                raise RuntimeError(f"STOW answered {r.status_code}: {r.text[:200]}")
            stored = r.json().get("00081199", {}).get("Value", [])
            if len(stored) != len(chunk):
                raise RuntimeError(f"STOW stored {len(stored)} of {len(chunk)}")

    return send


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50, help="instances per STOW-RS request")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="daphne processes (serve)"
    )
    parser.add_argument("--skip-cstore", action="store_true")
    args = parser.parse_args()
    orthanc_bin = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(orthanc_bin).exists():
        print("Orthanc is not installed (apt-get install orthanc)", file=sys.stderr)
        return 2
    dicomweb_plugin = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")

    print(f"generating {args.instances} instances of 384x512 16-bit MR ...", flush=True)
    files = make_series(args.instances)
    print(f"  {sum(map(len, files)) / 2**20:.0f} MiB per series", flush=True)

    work = Path(tempfile.mkdtemp(prefix="artiscan-bench-"))
    env = {k: v for k, v in os.environ.items()}
    env.setdefault("ARTISCAN_VAR_DIR", str(work / "var"))
    env["PYTHONPATH"] = str(ROOT)
    database = "PostgreSQL (DATABASE_URL)" if env.get("DATABASE_URL") else "SQLite (embedded)"
    print(f"ArtiScan database: {database}; {os.cpu_count()} CPUs", flush=True)
    procs: list[subprocess.Popen] = []
    try:
        py = [sys.executable]
        subprocess.run([*py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        token = subprocess.run(
            [*py, "manage.py", "shell", "-v0", "-c",
             "from backend.accounts.models import Site, Role\n"
             "from backend.accounts.services import site_create, user_create, token_create\n"
             "from backend.ingest.models import DicomSender\n"
             "site = Site.objects.filter(slug='bench').first() or "
             "site_create(name='Bench', slug='bench')\n"
             "import uuid; u = user_create(username='bench-' + uuid.uuid4().hex[:8], "
             "password=None, memberships=[(site, Role.OPERATOR)])\n"
             "DicomSender.objects.get_or_create(ae_title='BENCH', defaults={'site': site})\n"
             "print(token_create(user=u, name='bench')[1])"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        web_port, multi_port, scp_port = free_port(), free_port(), free_port()
        logs = {name: open(work / f"{name}.log", "wb") for name in ("web", "serve")}
        web = subprocess.Popen(
            [*py, "-m", "daphne", "-p", str(web_port), "backend.config.asgi:application"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=logs["web"],
        )  # fmt: skip
        multi = subprocess.Popen(
            [*py, "manage.py", "serve", "--port", str(multi_port), "--workers", str(args.workers)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=logs["serve"],
        )  # fmt: skip
        scp = subprocess.Popen(
            [*py, "manage.py", "dicom_scp", "--host", "127.0.0.1", "--port", str(scp_port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs += [web, multi, scp]
        o_http, o_dicom = free_port(), free_port()
        config = {
            "Name": "bench", "HttpPort": o_http, "DicomPort": o_dicom,
            "StorageDirectory": str(work / "orthanc"), "IndexDirectory": str(work / "orthanc"),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True, "DicomAet": "ORTHANC",
            "Plugins": [str(dicomweb_plugin)] if dicomweb_plugin.exists() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }  # fmt: skip
        (work / "orthanc.json").write_text(json.dumps(config))
        orthanc = subprocess.Popen(
            [orthanc_bin, str(work / "orthanc.json")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(orthanc)
        for port, proc, what in [(web_port, web, "daphne"), (multi_port, multi, "serve"),
                                 (scp_port, scp, "scp"), (o_http, orthanc, "Orthanc")]:  # fmt: skip
            wait_port(port, proc, what)
        time.sleep(2)  # every process of ``serve`` listening

        sessions: dict[str, requests.Session] = {}

        def orthanc_rest(i: int, share: list[bytes]) -> None:
            http = sessions.setdefault(f"orthanc/{i}", requests.Session())
            for data in share:
                r = http.post(f"http://127.0.0.1:{o_http}/instances", data=data, timeout=120)
                if r.status_code != 200:
                    raise RuntimeError(f"Orthanc answered {r.status_code}")

        ours = f"http://127.0.0.1:{web_port}/dicomweb/studies"
        ours_multi = f"http://127.0.0.1:{multi_port}/dicomweb/studies"
        theirs = f"http://127.0.0.1:{o_http}/dicom-web/studies"
        b, w = args.batch, args.workers
        paths: list[tuple[str, Callable[[int, list[bytes]], None]]] = [
            ("Orthanc REST 1/req", orthanc_rest),
        ]
        if dicomweb_plugin.exists():
            paths.append((f"Orthanc STOW-RS {b}/req", stow_sender(theirs, b, None, sessions)))
        paths += [
            ("ArtiScan STOW-RS 1/req, 1 proc", stow_sender(ours, 1, token, sessions)),
            (f"ArtiScan STOW-RS 1/req, {w} procs", stow_sender(ours_multi, 1, token, sessions)),
            (f"ArtiScan STOW-RS {b}/req, 1 proc", stow_sender(ours, b, token, sessions)),
            (f"ArtiScan STOW-RS {b}/req, {w} procs", stow_sender(ours_multi, b, token, sessions)),
        ]
        if not args.skip_cstore:
            paths += [
                ("Orthanc C-STORE", cstore_sender(o_dicom, "BENCH", "ORTHANC")),
                ("ArtiScan C-STORE", cstore_sender(scp_port, "BENCH", "ARTISCAN")),
            ]
        results: dict[str, float] = {}
        for clients in (1, args.clients):
            for name, send in tqdm(paths, desc=f"x{clients} clients", unit="path"):
                fresh = files if not results else make_series(args.instances)
                try:
                    results[f"{name} x{clients}"] = run_clients(fresh, clients, send)
                except Exception:
                    for log in ("web", "serve"):
                        errors = [
                            line for line in (work / f"{log}.log").read_text().splitlines()
                            if "Error" in line or "Traceback" in line or "ERROR" in line
                        ]  # fmt: skip
                        print(f"--- {log} server errors:", *errors[-20:], sep="\n")
                    raise

        print(f"\n{'path':<40}{'instances/s':>12}{'vs Orthanc':>12}{'vs its STOW':>12}")
        for name, rate in results.items():
            clients = name.split()[-1]
            line = f"{name:<40}{rate:>12.1f}"
            if name.startswith("ArtiScan"):
                kind = "C-STORE" if "C-STORE" in name else "REST 1/req"
                line += f"{rate / results[f'Orthanc {kind} {clients}']:>11.2f}x"
                stow = results.get(f"Orthanc STOW-RS {b}/req {clients}")
                if "STOW" in name and stow:
                    line += f"{rate / stow:>11.2f}x"
            print(line)
        print("\npeak resident memory (MiB):")
        print(f"  ArtiScan web (1 daphne)        {peak_rss_mb(web.pid):8.0f}")
        print(f"  ArtiScan serve (per process)   {peak_rss_mb(multi.pid):8.0f}")
        print(f"  ArtiScan C-STORE SCP           {peak_rss_mb(scp.pid):8.0f}")
        print(f"  Orthanc                        {peak_rss_mb(orthanc.pid):8.0f}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
