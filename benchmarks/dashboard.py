"""Dashboard queries over 1 million scored instances on PostgreSQL: raw aggregation vs rollups.

    .venv/bin/python benchmarks/dashboard.py [--instances 1000000] [--database artiscan_bench_dash]

Creates (drops first) a scratch PostgreSQL database next to the one in DATABASE_URL (default
postgres://postgres@127.0.0.1:5432), migrates it, generates rows in SQL with generate_series
(2 sites, 6 scanners, 5 protocols, 52 weeks, 16 instances a series, one InstanceScore per
instance, a Finding on ~9 % of instances), then times:
  * raw: the dashboard's cell aggregation straight from series/runs/findings/instance scores
    (what a dashboard without rollups would run on every page load);
  * rollup refresh: full, and incremental after one more scored series;
  * rollups: every API the dashboard page calls (summary, trend, worst protocols, worst
    scanners, heat map, alerts), through Django's test client, as a site admin and as the
    superuser, over 12 and 52 weeks. The goal is <= 200 ms for the page's data.
Prints median and max of repeated runs. The database is dropped afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROTOCOLS = [
    ("t1_mprage_sag", "GRE"),
    ("t2_tse_ax", "SE"),
    ("t2_flair_ax", "FLAIR"),
    ("dwi_b1000_ax", "EPI"),
    ("swi_ax", "GRE"),
]
ARTIFACTS = [
    "motion", "ghosting", "aliasing", "chemical_shift", "susceptibility", "zipper", "spike",
    "gibbs", "bias_field", "noise",
]  # fmt: skip
SLICES = 16
WEEKS = 52


def admin_url(database_url: str, name: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))


def recreate(database_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url(database_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop(database_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url(database_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fillers(cursor, table: str, known: set[str]) -> dict[str, str]:
    """SQL values for NOT NULL columns without a default that this script does not know
    (columns other apps add later), so the benchmark survives schema growth."""
    cursor.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
        "AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'",
        [table],
    )
    out = {}
    for column, kind in cursor.fetchall():
        if column in known:
            continue
        if kind in ("character varying", "text"):
            out[column] = "''"
        elif kind in ("integer", "bigint", "smallint", "double precision", "real", "numeric"):
            out[column] = "0"
        elif kind == "boolean":
            out[column] = "false"
        elif kind == "jsonb":
            out[column] = "'[]'::jsonb"
        elif kind.startswith("timestamp"):
            out[column] = "now()"
        else:
            raise RuntimeError(f"{table}.{column}: no filler for type {kind}")
    return out


def insert(cursor, table: str, values: dict[str, str], source: str) -> None:
    values = {**values, **fillers(cursor, table, set(values))}
    cols = ", ".join(f'"{c}"' for c in values)
    exprs = ", ".join(values.values())
    cursor.execute(f"INSERT INTO {table} ({cols}) SELECT {exprs} {source}")


def generate(n_instances: int, step: Callable[[str], None]) -> dict[str, int]:
    from django.db import connection

    from backend.accounts.models import Site
    from backend.scoring.models import ModelVersion
    from backend.studies.models import Scanner

    sites = [Site.objects.create(name=f"Bench site {c}", slug=f"bench-{c}") for c in "ab"]
    scanners = [
        Scanner.objects.create(
            site=site, pseudonym=f"bench-{site.slug}-{i}", label=f"{site.slug} MR-{i}"
        )
        for site in sites
        for i in range(3)
    ]
    model = ModelVersion.objects.create(
        name="bench", version="1", sha256="b" * 64, weights_key="", classes=ARTIFACTS
    )
    n_series = n_instances // SLICES
    n_studies = n_series // len(PROTOCOLS)
    scanner_ids = "ARRAY[" + ",".join(str(s.pk) for s in scanners) + "]"
    site_of = "ARRAY[" + ",".join(str(s.site_id) for s in scanners) + "]"
    protocols = "ARRAY[" + ",".join(f"'{p}'" for p, _ in PROTOCOLS) + "]"
    families = "ARRAY[" + ",".join(f"'{f}'" for _, f in PROTOCOLS) + "]"
    artifacts = "ARRAY[" + ",".join(f"'{a}'" for a in ARTIFACTS) + "]"
    with connection.cursor() as c:
        c.execute("SET synchronous_commit = off")
        # Studies: one scanner each (so its site), spread over 52 weeks ending now.
        c.execute(
            "CREATE TEMP TABLE bench_study AS SELECT g AS n, gen_random_uuid() AS id, "
            f"1 + (g % 6) AS k, now() - (random() * {WEEKS * 7} * interval '1 day') AS at "
            f"FROM generate_series(1, {n_studies}) g"
        )
        insert(
            c, "studies_study",
            {"id": "id", "site_id": f"({site_of})[k]", "study_uid": "'2.25.' || n",
             "description": "'BENCH'", "received_at": "at"},
            "FROM bench_study",
        )  # fmt: skip
        step("studies")
        c.execute(
            "CREATE TEMP TABLE bench_series AS SELECT gen_random_uuid() AS id, s.id AS study_id, "
            f"s.k, p AS p, s.at + p * interval '5 minutes' AS at, random() AS r, s.n * 10 + p AS n "
            f"FROM bench_study s CROSS JOIN generate_series(1, {len(PROTOCOLS)}) p"
        )
        c.execute("ALTER TABLE bench_series ADD COLUMN run_id uuid DEFAULT gen_random_uuid()")
        c.execute("ALTER TABLE bench_series ADD COLUMN suit double precision")
        c.execute("UPDATE bench_series SET suit = greatest(0.05, least(1, 0.95 - r * r * 0.9))")
        insert(
            c, "studies_series",
            {"id": "id", "study_id": "study_id", "site_id": f"({site_of})[k]",
             "scanner_id": f"({scanner_ids})[k]", "series_uid": "'2.25.9' || n",
             "series_number": "p", "modality": "'MR'", "description": f"({protocols})[p]",
             "protocol": f"({protocols})[p]", "sequence_family": f"({families})[p]",
             "status": "'scored'", "instance_count": str(SLICES), "suitability": "suit",
             "received_at": "at", "updated_at": "at"},
            "FROM bench_series",
        )  # fmt: skip
        insert(
            c, "scoring_scoringrun",
            {"id": "run_id", "series_id": "id", "site_id": f"({site_of})[k]",
             "model_version_id": str(model.pk), "status": "'done'", "suitability": "suit",
             "nondiagnostic": "suit < 0.5", "reason": "''", "error": "''", "created_at": "at",
             "started_at": "at", "finished_at": "at + interval '40 seconds'"},
            "FROM bench_series",
        )  # fmt: skip
        c.execute(
            "UPDATE studies_series s SET current_run_id = b.run_id FROM bench_series b "
            "WHERE s.id = b.id"
        )
        step("series and runs")
        c.execute(
            "CREATE TEMP TABLE bench_instance AS SELECT gen_random_uuid() AS id, "
            "b.id AS series_id, b.run_id, b.k, b.suit, b.at + i * interval '2 seconds' AS at, "
            "i, b.n * 100 + i AS n, "
            f"random() AS r FROM bench_series b CROSS JOIN generate_series(1, {SLICES}) i"
        )
        insert(
            c, "studies_instance",
            {"id": "id", "series_id": "series_id", "site_id": f"({site_of})[k]",
             "sop_uid": "'2.25.8' || n", "sop_class_uid": "'1.2.840.10008.5.1.4.1.1.4'",
             "instance_number": "i", "storage_key": "''", "size_bytes": "0", "frame_count": "1",
             "rows": "384", "columns": "512", "phase_encode_direction": "'ROW'",
             "suitability": "suit", "received_at": "at"},
            "FROM bench_instance",
        )  # fmt: skip
        step("instances")
        insert(
            c, "scoring_instancescore",
            {"run_id": "run_id", "instance_id": "id", "suitability": "suit",
             "nondiagnostic": "suit < 0.5", "reason": "''",
             "created_at": "at + (0.2 + r) * interval '1 second'"},
            "FROM bench_instance",
        )  # fmt: skip
        step("instance scores")
        # Findings on ~9 % of instances, more on worse series; the type varies by scanner.
        insert(
            c, "scoring_finding",
            {"run_id": "run_id", "instance_id": "id", "site_id": f"({site_of})[k]",
             "artifact_type": f"({artifacts})[1 + ((n * 7 + k * 3) % 10)]", "mask_key": "''",
             "area_px": "100", "area_fraction": "0.01", "head_fraction": "0.02",
             "bbox": "'[]'::jsonb", "confidence": "0.8", "advice": "''",
             "review_state": "'pending'", "created_at": "at"},
            "FROM bench_instance WHERE r < 0.05 + (1 - suit) * 0.12",
        )  # fmt: skip
        step("findings")
        c.execute("ANALYZE")
        counts = {}
        for table in (
            "studies_series",
            "studies_instance",
            "scoring_instancescore",
            "scoring_finding",
        ):
            c.execute(f"SELECT count(*) FROM {table}")
            counts[table] = c.fetchone()[0]
    return counts


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--database", default="artiscan_bench_dash")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="Time again on a database kept by an earlier --keep run (no generation, no full "
        "refresh): on a shared machine, to repeat the timings when it is quieter.",
    )
    args = parser.parse_args()

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    if not base.startswith("postgres"):
        sys.exit("This benchmark needs PostgreSQL (DATABASE_URL=postgres://...).")
    if not args.reuse:
        recreate(base, args.database)
    os.environ["DATABASE_URL"] = admin_url(base, args.database)
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
        if not (args.keep or args.reuse):
            drop(base, args.database)


def run(args: argparse.Namespace) -> None:
    import datetime as dt

    from django.test import Client
    from django.utils import timezone

    from backend.accounts.models import Role, Site, User
    from backend.accounts.services import user_create
    from backend.dashboards.models import QualityRollup
    from backend.dashboards.selectors import monday
    from backend.dashboards.services import _cells_compute, rollups_refresh
    from backend.scoring.models import InstanceScore, ScoringRun

    if not args.reuse:
        bar = tqdm(total=6, desc="generating", unit="step")
        started = time.perf_counter()

        def step(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        counts = generate(args.instances, step)
        bar.close()
        print(
            f"\nGenerated in {time.perf_counter() - started:.1f} s: "
            + ", ".join(f"{k} {v:,}" for k, v in counts.items())
        )
    print(f"Scored instances in the database: {InstanceScore.objects.count():,}")

    site = Site.objects.get(slug="bench-a")
    this_week = monday(timezone.now().date())
    weeks12 = {this_week - dt.timedelta(weeks=i) for i in range(12)}
    weeks52 = {this_week - dt.timedelta(weeks=i) for i in range(WEEKS + 1)}
    print("\nRaw aggregation (no rollups), one site:")
    for label, weeks in (("12 weeks", weeks12), ("52 weeks", weeks52)):
        median, worst = timed(lambda w=weeks: _cells_compute(site.pk, w), max(2, args.repeat // 3))
        print(f"  {label:<10} median {median:8.1f} ms   max {worst:8.1f} ms")

    if not args.reuse:
        start = time.perf_counter()
        full = rollups_refresh(full=True, evaluate_alerts=True)
        full_ms = (time.perf_counter() - start) * 1000
        print(
            f"\nRollup refresh, full: {full_ms:,.0f} ms for {full.site_weeks} site-weeks -> "
            f"{full.cells} cells ({QualityRollup.objects.count()} rows), "
            f"{len(full.alerts)} alert(s)"
        )
    # One more scored series this week: the incremental pass rebuilds one site-week.
    run = ScoringRun.objects.filter(site=site).order_by("-finished_at").first()
    ScoringRun.objects.filter(pk=run.pk).update(finished_at=timezone.now())
    start = time.perf_counter()
    inc = rollups_refresh()
    print(f"Rollup refresh, incremental: {(time.perf_counter() - start) * 1000:,.0f} ms for "
          f"{inc.site_weeks} site-week(s)")  # fmt: skip

    admin = User.objects.filter(username="bench-admin").first() or user_create(
        username="bench-admin", password=None, memberships=[(site, Role.SITE_ADMIN)]
    )
    root = User.objects.filter(username="bench-root").first() or user_create(
        username="bench-root", password=None, is_superuser=True
    )
    endpoints = [
        "summary/",
        "trend/",
        "worst/?by=protocol",
        "worst/?by=scanner",
        "heatmap/",
        "alerts/",
    ]
    print("\nDashboard page's API calls on rollups (Django test client, JSON rendered):")
    for user, who in ((admin, "site admin"), (root, "superuser")):
        client = Client()
        client.force_login(user)
        for weeks in (12, 52):
            start_week = (this_week - dt.timedelta(weeks=weeks - 1)).isoformat()

            def page(c: Client = client, s: str = start_week) -> None:
                for endpoint in endpoints:
                    sep = "&" if "?" in endpoint else "?"
                    r = c.get(f"/api/dashboards/{endpoint}{sep}week_from={s}&week_to={this_week}")
                    assert r.status_code == 200, r.content[:200]

            page()  # warm
            median, worst = timed(page, args.repeat)
            print(
                f"  {who:<10} {weeks:>2} weeks: all 6 calls median {median:7.1f} ms"
                f"   max {worst:7.1f} ms"
            )
    client = Client()
    client.force_login(admin)
    median, worst = timed(
        lambda: client.get(
            "/api/dashboards/summary/?week_from=" + (this_week - dt.timedelta(weeks=11)).isoformat()
        ),
        args.repeat,
    )
    print(f"  single call (summary, 12 weeks): median {median:.1f} ms   max {worst:.1f} ms")


if __name__ == "__main__":
    main()
