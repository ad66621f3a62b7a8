"""Ingest throughput: ArtiScan (STOW-RS and C-STORE, de-identification included) against a real
Orthanc (REST upload, its own STOW-RS from Debian's orthanc-dicomweb plugin when installed, and
C-STORE) on the same kind of files, same machine, same run.

    .venv/bin/python benchmarks/ingest.py [--instances 300] [--clients 4] [--batch 50]
        [--workers N] [--scp-processes N] [--modes embedded,site] [--skip-cstore]
        [--rounds N] [--paths '1/req,C-STORE']

ArtiScan is measured as it is deployed, in each mode asked for:

- ``embedded``: the defaults (SQLite, the broker that needs no server) on a scratch directory;
- ``site``: PostgreSQL and Redis, from ``--database-url``/``--redis-url`` (default: the
  ``DATABASE_URL``/``REDIS_URL`` of the environment; the mode is skipped when they are unset).

Each mode runs ``manage.py serve --workers N`` (N daphne processes on one port) and
``manage.py dicom_scp --processes N``; no scoring worker runs, so the scoring requests wait in
the broker. Orthanc (Debian's, temporary configuration) is measured right before each mode's
own rows, and each ratio is to those adjacent figures: the machine's load drifts within a run.
With ``--rounds N`` both are measured N times, alternating which goes first, and the table shows
each path's median.
Every path gets a fresh series (new UIDs), so nothing is a duplicate. Before each path the
page cache's unwritten data is written out (``sync``, untimed): both servers make each file
durable before they answer (Orthanc ``fdatasync``s it, its default ``SyncStorageArea``; ArtiScan
syncs the store's filesystem), but Orthanc leaves its SQLite index unsynced, and a filesystem
sync writes that too, so otherwise ArtiScan's first syncs would write what Orthanc left.

Rows: STOW-RS with 1 instance per request (what the operator workstation sends) and with
``--batch`` per request, by one client and by ``--clients`` concurrent ones; C-STORE by one
association and by ``--clients`` concurrent ones. STOW-RS 1/request is compared with Orthanc's
REST upload (one instance per request) and with Orthanc's STOW-RS at 1/request; batches with
Orthanc's STOW-RS at the same batch size; C-STORE with Orthanc's C-STORE. Then the peak resident
memory of every ingest process. The load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
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

ROOT = Path(__file__).resolve().parent.parent
MR = "1.2.840.10008.5.1.4.1.1.4"
Send = Callable[[int, list[bytes]], None]


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
        # Axial slices 5 mm apart, as a scanner writes them (the DICOM SEG needs the geometry).
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-96.0, -128.0, 5.0 * i]
        ds.SliceThickness, ds.SpacingBetweenSlices = 5, 5
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


ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def make_enhanced(n: int, rows: int = 384, columns: int = 512) -> bytes:
    """The slices of :func:`make_series` as one Enhanced MR (multi-frame) instance of ``n``
    frames, its acquisition values in functional groups, as a scanner exporting Enhanced MR
    (Siemens XA's default) sends a series."""
    from pydicom.sequence import Sequence

    classic = [pydicom.dcmread(io.BytesIO(data)) for data in make_series(n, rows, columns)]
    positions = [list(source.ImagePositionPatient) for source in classic]
    ds = classic[0]
    moved = ("EchoTime", "RepetitionTime", "PixelSpacing", "SliceThickness",
             "SpacingBetweenSlices", "InPlanePhaseEncodingDirection", "ImagePositionPatient",
             "ImageOrientationPatient", "PixelBandwidth")  # fmt: skip
    for keyword in moved:  # into the functional groups
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    ds.NumberOfFrames, ds.InstanceNumber = n, 1
    shared = Dataset()
    timing = Dataset()
    timing.RepetitionTime = 4000.0
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness, measures.SpacingBetweenSlices = [0.5, 0.5], 5, 5
    shared.PixelMeasuresSequence = Sequence([measures])
    fov = Dataset()
    fov.InPlanePhaseEncodingDirection = "ROW"
    shared.MRFOVGeometrySequence = Sequence([fov])
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = Sequence([orientation])
    modifier = Dataset()
    modifier.PixelBandwidth = 130.0
    shared.MRImagingModifierSequence = Sequence([modifier])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for i, where in enumerate(positions):
        frame = Dataset()
        content = Dataset()
        content.FrameAcquisitionNumber = i + 1
        frame.FrameContentSequence = Sequence([content])
        position = Dataset()
        position.ImagePositionPatient = where
        frame.PlanePositionSequence = Sequence([position])
        echo = Dataset()
        echo.EffectiveEchoTime = 90.0
        frame.MREchoSequence = Sequence([echo])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = b"".join(source.PixelData for source in classic)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(what)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb(pid: int) -> list[float]:
    """VmHWM of ``pid`` and of each of its children (the serving processes)."""
    return [_hwm_mb(p) for p in [pid, *_children(pid)] if _hwm_mb(p)]


def run_clients(files: list[bytes], clients: int, send: Send) -> float:
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
    # What the previous path left unwritten is written now, untimed: ArtiScan syncs the store's
    # filesystem before it answers, Orthanc syncs each file's data but not its index, and both
    # store on this machine's disk, so without this ArtiScan's syncs would write Orthanc's too.
    os.sync()
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return len(files) / (time.perf_counter() - start)


def cstore_sender(port: int, calling: str, called: str) -> Send:
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


def stow_sender(url: str, batch: int, token: str | None) -> Send:
    """Multipart/related STOW-RS requests of ``batch`` instances each to ``url``, one
    keep-alive session per client."""
    boundary = "benchboundary"
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"

    def send(_: int, share: list[bytes]) -> None:
        with requests.Session() as http:
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


def operator_token(env: dict[str, str]) -> str:
    """An API token of a new operator of the site ``bench`` (made if missing) on the
    installation of ``env``, which also maps the calling AE title ``BENCH`` to that site."""
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-v0", "-c",
         "from backend.accounts.models import Site, Role\n"
         "from backend.accounts.services import site_create, user_create, token_create\n"
         "from backend.ingest.models import DicomSender\n"
         "site = Site.objects.filter(slug='bench').first() or "
         "site_create(name='Bench', slug='bench')\n"
         "import uuid; u = user_create(username='bench-' + uuid.uuid4().hex[:8], "
         "password=None, memberships=[(site, Role.OPERATOR)])\n"
         "DicomSender.objects.get_or_create(ae_title='BENCH', "
         "defaults={'site': site, 'host': '127.0.0.1'})\n"
         "print(token_create(user=u, name='bench')[1])"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


class Orthanc:
    """Debian's Orthanc on free ports with a temporary configuration."""

    PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")

    def __init__(self, work: Path) -> None:
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        if not Path(binary).exists():
            raise SystemExit("Orthanc is not installed (apt-get install orthanc)")
        self.http, self.dicom = free_port(), free_port()
        config = {
            "Name": "bench", "HttpPort": self.http, "DicomPort": self.dicom,
            "StorageDirectory": str(work / "orthanc"), "IndexDirectory": str(work / "orthanc"),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True, "DicomAet": "ORTHANC",
            "Plugins": [str(self.PLUGIN)] if self.PLUGIN.exists() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }  # fmt: skip
        (work / "orthanc.json").write_text(json.dumps(config))
        self.proc = subprocess.Popen(
            [binary, str(work / "orthanc.json")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.http, self.proc, "Orthanc")

    def rest(self, _: int, share: list[bytes]) -> None:
        with requests.Session() as http:
            for data in share:
                r = http.post(f"http://127.0.0.1:{self.http}/instances", data=data, timeout=120)
                if r.status_code != 200:
                    raise RuntimeError(f"Orthanc answered {r.status_code}")

    def paths(self, batch: int, cstore: bool) -> dict[str, Send]:
        paths: dict[str, Send] = {"REST 1/req": self.rest}
        if self.PLUGIN.exists():
            stow = f"http://127.0.0.1:{self.http}/dicom-web/studies"
            paths["STOW 1/req"] = stow_sender(stow, 1, None)
            paths[f"STOW {batch}/req"] = stow_sender(stow, batch, None)
        if cstore:
            paths["C-STORE"] = cstore_sender(self.dicom, "BENCH", "ORTHANC")
        return paths


class ArtiScan:
    """``manage.py serve`` and ``manage.py dicom_scp`` of one mode on a scratch installation."""

    def __init__(self, mode: str, env: dict[str, str], work: Path, args: argparse.Namespace):
        self.mode, self.env, self.work = mode, env, work
        py = [sys.executable, "manage.py"]
        subprocess.run([*py, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        self.token = operator_token(env)
        self.web_port, self.scp_port = free_port(), free_port()
        self.log = work / f"{mode}-serve.log"
        self.web = subprocess.Popen(
            [*py, "serve", "--port", str(self.web_port), "--workers", str(args.workers)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"),
        )  # fmt: skip
        scp = [*py, "dicom_scp", "--host", "127.0.0.1", "--port", str(self.scp_port)]
        if args.scp_processes > 1:
            scp += ["--processes", str(args.scp_processes)]
        self.scp = subprocess.Popen(
            scp, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.web_port, self.web, f"{mode} serve")
        wait_port(self.scp_port, self.scp, f"{mode} dicom_scp")
        time.sleep(2)  # every process of ``serve`` listening
        # Each process pays its imports and first connections on its first request: not what
        # is measured. New connections and associations reach every process in turn, likely.
        warm = make_series(3 * (args.workers + args.scp_processes))
        stow = stow_sender(f"http://127.0.0.1:{self.web_port}/dicomweb/studies", 1, self.token)
        for i in range(3 * args.workers):
            stow(0, warm[i : i + 1])
        cstore = cstore_sender(self.scp_port, "BENCH", "ARTISCAN")
        for i in range(3 * args.workers, len(warm)):
            cstore(0, warm[i : i + 1])

    def paths(self, batch: int, cstore: bool) -> dict[str, Send]:
        stow = f"http://127.0.0.1:{self.web_port}/dicomweb/studies"
        paths = {
            "STOW 1/req": stow_sender(stow, 1, self.token),
            f"STOW {batch}/req": stow_sender(stow, batch, self.token),
        }
        if cstore:
            paths["C-STORE"] = cstore_sender(self.scp_port, "BENCH", "ARTISCAN")
        return paths

    def errors(self) -> list[str]:
        return [
            line
            for line in self.log.read_text(errors="replace").splitlines()
            if "Error" in line or "Traceback" in line or "ERROR" in line
        ][-20:]

    def stop(self) -> None:
        for proc in (self.web, self.scp):
            proc.terminate()
        for proc in (self.web, self.scp):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def measure(
    paths: dict[str, Send], n: int, clients: int, label: str, only: list[str]
) -> dict[str, float]:
    """Each path with one client, then with ``clients``: a fresh series each time. ``only``:
    the paths whose names contain one of these words (every path when empty)."""
    rates: dict[str, float] = {}
    for c in sorted({1, clients}):
        for name, send in paths.items():
            if only and not any(word in name for word in only):
                continue
            rates[f"{name} x{c}"] = run_clients(make_series(n), c, send)
            print(f"  {label} {name} x{c}: {rates[f'{name} x{c}']:.1f}/s", flush=True)
    return rates


def median_rates(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each path's median over the rounds."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300, help="instances per path")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50, help="instances per STOW-RS request")
    cpus = os.cpu_count() or 1
    parser.add_argument("--workers", type=int, default=cpus, help="daphne processes (serve)")
    parser.add_argument("--scp-processes", type=int, default=cpus, help="dicom_scp processes")
    parser.add_argument("--modes", default="embedded,site")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--skip-cstore", action="store_true")
    parser.add_argument(
        "--paths",
        default="",
        help="measure only the paths whose names contain one of these comma-separated words "
        "(e.g. '1/req' for the one-instance-per-request rows); default: every path",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure Orthanc and ArtiScan this many times, alternating who goes first; "
        "the table shows each path's median (the load of a shared machine drifts)",
    )
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "site" in modes and not (args.database_url and args.redis_url):
        print("site mode skipped: no DATABASE_URL/REDIS_URL (or --database-url/--redis-url)")
        modes.remove("site")
    b, cstore = args.batch, not args.skip_cstore
    only = [w.strip() for w in args.paths.split(",") if w.strip()]

    work = Path(tempfile.mkdtemp(prefix="artiscan-bench-"))
    base_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
    }
    base_env["PYTHONPATH"] = str(ROOT)
    print(f"{args.instances} instances of 384x512 16-bit MR per path; {cpus} CPUs; {load()}")
    print(f"ArtiScan: serve --workers {args.workers}, dicom_scp --processes {args.scp_processes}")
    orthanc: Orthanc | None = None
    running: list[ArtiScan] = []
    table: list[tuple[str, dict[str, float], dict[str, float], str]] = []
    rss: dict[str, list[float]] = {}
    try:
        orthanc = Orthanc(work)
        for mode in modes:
            env = {**base_env, "ARTISCAN_VAR_DIR": str(work / f"var-{mode}")}
            if mode == "site":
                env["DATABASE_URL"], env["REDIS_URL"] = args.database_url, args.redis_url
            print(f"{mode}: starting ...", flush=True)
            ours = ArtiScan(mode, env, work, args)
            running.append(ours)
            theirs_runs: list[dict[str, float]] = []
            mine_runs: list[dict[str, float]] = []
            for r in range(args.rounds):
                # Rounds alternate who goes first, so a drift of the load favours neither.
                for who in ("orthanc", "ours") if r % 2 == 0 else ("ours", "orthanc"):
                    if who == "orthanc":
                        theirs_runs.append(
                            measure(
                                orthanc.paths(b, cstore),
                                args.instances,
                                args.clients,
                                "Orthanc",
                                only,
                            )
                        )
                        continue
                    try:
                        mine_runs.append(
                            measure(ours.paths(b, cstore), args.instances, args.clients, mode, only)
                        )
                    except Exception:
                        print(f"--- {mode} server errors:", *ours.errors(), sep="\n")
                        raise
            theirs, mine = median_rates(theirs_runs), median_rates(mine_runs)
            table.append((mode, theirs, mine, load()))
            rss[f"{mode} serve (parent, then each daphne)"] = peak_rss_mb(ours.web.pid)
            rss[f"{mode} dicom_scp (each process)"] = peak_rss_mb(ours.scp.pid)
            ours.stop()
            running.remove(ours)
        rss["Orthanc"] = peak_rss_mb(orthanc.proc.pid)
    finally:
        for ours in running:
            ours.stop()
        if orthanc is not None:
            orthanc.proc.terminate()
            orthanc.proc.wait(timeout=15)
        shutil.rmtree(work, ignore_errors=True)

    compare = [  # our row, Orthanc's rows it is compared with
        ("STOW 1/req", ["REST 1/req", "STOW 1/req"]),
        (f"STOW {b}/req", [f"STOW {b}/req", "REST 1/req"]),
        ("C-STORE", ["C-STORE"]),
    ]
    print(f"\n{'ArtiScan path':<28}{'inst/s':>8}   {'Orthanc path':<16}{'inst/s':>8}{'ratio':>8}")
    for mode, theirs, mine, when in table:
        print(f"--- {mode} ({when} at its end)")
        for c in sorted({1, args.clients}):
            for ours_name, their_names in compare:
                key = f"{ours_name} x{c}"
                if key not in mine:
                    continue
                first = True
                for their in their_names:
                    their_key = f"{their} x{c}"
                    if their_key not in theirs:
                        continue
                    left = f"{key:<28}{mine[key]:>8.1f}" if first else " " * 36
                    ratio = mine[key] / theirs[their_key]
                    print(f"{left}   {their_key:<16}{theirs[their_key]:>8.1f}{ratio:>7.2f}x")
                    first = False
    print("\npeak resident memory (MiB):")
    for what, figures in rss.items():
        print(f"  {what:<42}{' '.join(f'{x:.0f}' for x in figures)}")
    print(load())
    return 0


if __name__ == "__main__":
    sys.exit(main())
