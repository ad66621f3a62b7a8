"""De-identification cost per instance: the door's fast path against the reference dataset path
and pydicom's own read + write, on the same files, same process, same run.

    .venv/bin/python benchmarks/deid.py [--repeat 200] [--frames 24] [--items 200]

Three kinds of file, each Explicit VR Little Endian and (``--syntaxes``) Implicit VR:

- ``mr``: a 384 x 512 16-bit MR slice, the one ``benchmarks/ingest.py`` sends (its generator);
- ``enhanced``: an Enhanced MR of ``--frames`` 384 x 512 frames with per-frame functional
  groups (the test builders' Enhanced MR, full size);
- ``nested``: the ``mr`` slice plus the test builders' extra PHI (private tags at depth 1 to 3,
  curves, overlays, unknown tags) and ``--items`` referenced-image items, each with a private
  tag and a nested sequence.

Paths, timed warm and interleaved (one call of each per round, so drift hits them alike):

- ``reference``: ``read_dicom`` -> ``deidentify(in_place=True)`` -> ``write_dicom``, the
  dataset path (what ``backend/ingest/services.py`` ran when this was written; kept as the
  tests' oracle);
- ``fast``: ``deidentify_bytes``, i.e. ``deidentify_file`` (``backend/deid/fast.py``, falling
  back to the dataset path for what it does not cover);
- ``floor``: ``pydicom.dcmread`` + ``dcmwrite`` to memory, no profile at all.

Prints, per kind and path: median and p90 ms per instance, instances/s, the ratio to the
reference, and the tracemalloc peak of one call; then the process's peak RSS. Every fast
output is checked to equal the reference's, element for element, before timing.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pydicom  # noqa: E402
from ingest import make_series  # noqa: E402 - the same slices as the ingest benchmark
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian  # noqa: E402

from backend.deid import profile  # noqa: E402
from tests.deid.builders import enhanced_mr_dataset, mr_dataset, to_bytes, with_more_phi  # noqa: E402

KEY = b"b" * 32


def _reencode(data: bytes, syntax: str) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    return to_bytes(ds, syntax)


def nested_heavy(items: int) -> Dataset:
    ds = with_more_phi(mr_dataset(7, rows=384, columns=512))
    refs = []
    for i in range(items):
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ref.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.8.498.3{i:05d}"
        ref.ReferencedFrameNumber = 1
        ref.add_new(0x00091001, "LO", "PRIVATE-CANARY")
        purpose = Dataset()
        purpose.CodeValue, purpose.CodingSchemeDesignator = "121311", "DCM"
        purpose.CodeMeaning = "Localizer"
        ref.PurposeOfReferenceCodeSequence = Sequence([purpose])
        refs.append(ref)
    ds.ReferencedImageSequence = Sequence(refs)
    return ds


def files(frames: int, items: int, syntaxes: list[str]) -> dict[str, bytes]:
    mr = make_series(1)[0]
    enhanced = to_bytes(enhanced_mr_dataset(frames=frames, rows=384, columns=512))
    nested = to_bytes(nested_heavy(items))
    out = {}
    for name, syntax in (
        ("explicit", ExplicitVRLittleEndian),
        ("implicit", ImplicitVRLittleEndian),
    ):
        if name not in syntaxes:
            continue
        for kind, data in (("mr", mr), ("enhanced", enhanced), ("nested", nested)):
            out[f"{kind}/{name}"] = data if name == "explicit" else _reencode(data, syntax)
    return out


def reference(data: bytes) -> bytes:
    ds = profile.deidentify(profile.read_dicom(data), key=KEY, in_place=True)
    return profile.write_dicom(ds)


def fast(data: bytes) -> bytes:
    return profile.deidentify_bytes(data, key=KEY)[0]


def floor(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


PATHS: dict[str, Callable[[bytes], bytes]] = {"reference": reference, "fast": fast, "floor": floor}


def same_dataset(a: bytes, b: bytes) -> bool:
    """Both files parse to the same elements (tag, VR, value) at every depth, and the same meta."""
    left, right = pydicom.dcmread(io.BytesIO(a)), pydicom.dcmread(io.BytesIO(b))

    def flat(ds: Dataset) -> list[tuple]:
        rows = []
        for element in ds:
            if element.VR == "SQ":
                rows.append((element.tag, "SQ", [flat(item) for item in element.value]))
            else:
                rows.append((element.tag, element.VR, element.value))
        return rows

    return flat(left.file_meta) == flat(right.file_meta) and flat(left) == flat(right)


def peak_bytes(fn: Callable[[bytes], bytes], data: bytes) -> int:
    tracemalloc.start()
    try:
        fn(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=200, help="timed rounds per file kind")
    parser.add_argument("--frames", type=int, default=24, help="frames of the Enhanced MR")
    parser.add_argument("--items", type=int, default=200, help="items of the nested file")
    parser.add_argument("--syntaxes", default="explicit,implicit")
    args = parser.parse_args()

    inputs = files(args.frames, args.items, args.syntaxes.split(","))
    with open("/proc/loadavg") as f:
        print(f"load average: {' '.join(f.read().split()[:3])}   python {sys.version.split()[0]}"
              f"   pydicom {pydicom.__version__}")  # fmt: skip
    print(f"{'file':20s} {'path':10s} {'median ms':>10s} {'p90 ms':>8s} {'inst/s':>8s} "
          f"{'vs ref':>7s} {'peak MiB':>9s}")  # fmt: skip
    for name, data in inputs.items():
        if not same_dataset(fast(data), reference(data)):
            print(f"{name}: the fast output differs from the reference's", file=sys.stderr)
            return 1
        repeat = max(10, args.repeat // 8) if name.startswith("enhanced") else args.repeat
        times: dict[str, list[float]] = {p: [] for p in PATHS}
        for _ in range(3):  # warm
            for fn in PATHS.values():
                fn(data)
        for _ in range(repeat):
            for path, fn in PATHS.items():
                start = time.perf_counter()
                fn(data)
                times[path].append(time.perf_counter() - start)
        ref = statistics.median(times["reference"])
        for path, fn in PATHS.items():
            median = statistics.median(times[path])
            p90 = statistics.quantiles(times[path], n=10)[-1]
            peak = peak_bytes(fn, data) / 2**20
            print(f"{name:20s} {path:10s} {median * 1000:10.3f} {p90 * 1000:8.3f} "
                  f"{1 / median:8.0f} {ref / median:6.2f}x {peak:9.1f}")  # fmt: skip
        print(f"{'':20s} ({len(data) / 2**20:.2f} MiB per file, {repeat} rounds)")
    print(f"peak RSS of this process: {vm_hwm_mb():.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
