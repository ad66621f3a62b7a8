"""WADO-RS series metadata: parsing every stored file at each request vs the JSON kept at ingest.

    .venv/bin/python benchmarks/metadata.py [--slices 32] [--repeat 9] [--database NAME]

Creates (drops first) a scratch PostgreSQL database next to the one in DATABASE_URL (default
postgres://postgres@127.0.0.1:5432) and a scratch store (encrypted, local), migrates, ingests one
MR series of ``--slices`` 16-bit 384 x 512 instances through ``series_ingest`` (de-identified,
encrypted, metadata kept), then times ``GET /dicomweb/studies/{s}/series/{s}/metadata`` through
Django's test client (scope check, audit row and all), as a signed-in radiologist:
  * parse: the kept metadata deleted before each request (untimed), so the view decrypts and
    parses every file (what every request cost before the metadata was kept; it also keeps the
    result again, one INSERT);
  * kept: served from the kept JSON.
Both bodies are checked to be byte-identical. Also prints what keeping the JSON adds to ingest
(making it from the clean bytes, per file): pydicom converting every element (the reference)
and ``metadata_json_of`` (memo of element texts, emptied before each run), same texts.
Scoring and realtime events are switched off: they are not what is measured. Prints median and
min of ``--repeat`` runs of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dashboard import admin_url, drop, recreate  # noqa: E402 - the same scratch database helpers
from ingest import make_series  # noqa: E402 - the same series as the ingest benchmark


def timed(
    fn: Callable[[], object], repeat: int, setup: Callable[[], object] | None = None
) -> list[float]:
    """Seconds of each of ``repeat`` calls of ``fn`` (``setup`` runs before each, untimed)."""
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def ms(times: list[float]) -> str:
    return f"median {statistics.median(times) * 1000:8.1f} ms   min {min(times) * 1000:8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--database", default="artiscan_bench_metadata")
    args = parser.parse_args()

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    if not base.startswith("postgres"):
        sys.exit("This benchmark needs PostgreSQL (DATABASE_URL=postgres://...).")
    recreate(base, args.database)
    scratch = tempfile.TemporaryDirectory(prefix="artiscan-bench-metadata-")
    os.environ["DATABASE_URL"] = admin_url(base, args.database)
    os.environ["ARTISCAN_VAR_DIR"] = scratch.name  # secrets, store: all scratch
    os.environ.pop("ARTISCAN_STORAGE", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    try:
        run(args)
    finally:
        from django.db import connections

        connections.close_all()
        drop(base, args.database)
        scratch.cleanup()


def run(args: argparse.Namespace) -> None:
    from django.test import Client

    import backend.ingest.services as ingest
    from backend.accounts.models import Role
    from backend.accounts.services import site_create, user_create
    from backend.dicomweb import metadata as metadata_memo
    from backend.dicomweb.metadata import metadata_json_of, metadata_json_reference
    from backend.studies.models import InstanceMetadata, Series

    ingest.series_score_enqueue = lambda **_: None  # type: ignore[assignment]
    ingest.event_publish = lambda **_: None  # type: ignore[assignment]

    site = site_create(name="Bench", slug="bench")
    user = user_create(username="bench", password=None, memberships=[(site, Role.RADIOLOGIST)])
    files = make_series(args.slices)
    start = time.perf_counter()
    outcomes = ingest.series_ingest(site=site, files=files, source="stow")
    ingest_s = time.perf_counter() - start
    assert {o.status for o in outcomes} == {"accepted"}, outcomes
    series = Series.objects.select_related("study").get(pk=outcomes[0].series_id)
    url = f"/dicomweb/studies/{series.study.study_uid}/series/{series.series_uid}/metadata"
    client = Client()
    client.force_login(user)

    def get() -> bytes:
        response = client.get(url)
        assert response.status_code == 200, response.status_code
        return response.content

    def forget() -> None:
        InstanceMetadata.objects.filter(instance__series=series).delete()

    forget()
    parsed, kept = get(), get()
    assert parsed == kept, "the kept metadata differs from the parsed one"
    print(
        f"Series of {args.slices} x 384 x 512 (16-bit) MR, {len(kept) / 1024:.0f} KiB of metadata;"
        f" ingest took {ingest_s * 1000:.0f} ms ({args.slices / ingest_s:.0f} instances/s)"
    )
    print(f"  GET series metadata, parse every file: {ms(timed(get, args.repeat, forget))}")
    print(f"  GET series metadata, kept JSON:        {ms(timed(get, args.repeat))}")
    clean = [ingest._door(site=site, data=f, source="stow").data for f in files]  # type: ignore[union-attr]
    # Ingest-side cost: pydicom's conversion of every element (the reference) against the memo
    # of element texts, emptied before each run so that every run is a series met for the first
    # time (its first file converts everything, the others what differs). Same texts checked.
    assert [metadata_json_of(c) for c in clean] == [metadata_json_reference(c) for c in clean]
    for name, make, setup in (
        ("reference (pydicom)", metadata_json_reference, None),
        ("metadata_json_of (memo)", metadata_json_of, metadata_memo._memo.clear),
    ):
        making = timed(lambda make=make: [make(c) for c in clean], args.repeat, setup)
        print(
            f"  ingest-side cost, making the JSON of {args.slices} files, {name}: {ms(making)} "
            f"({statistics.median(making) / args.slices * 1000:.3f} ms per file)"
        )


if __name__ == "__main__":
    main()
