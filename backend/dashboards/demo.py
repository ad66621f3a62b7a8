"""SYNTHETIC demo history for the dashboards: weeks of scored series across two sites and three
scanners, with one injected jump (the spike rate of one scanner in the current week) so that an
alert shows. Every row is marked: studies are described ``SYNTHETIC DEMO HISTORY``, series carry
``(synthetic)``, instances point at no file and the runs belong to a model version named
``synthetic-demo-history`` that is never deployed. Nothing here is a real acquisition."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from backend.accounts.models import Site
from backend.scoring.models import Finding, InstanceScore, ModelVersion, RunStatus, ScoringRun
from backend.studies.models import Instance, Scanner, Series, SeriesStatus, Study

SYNTHETIC = "SYNTHETIC DEMO HISTORY"
MODEL_NAME = "synthetic-demo-history"
SEED = 20260302

# name, family, description, instances per series, extra artifact propensity
PROTOCOLS = [
    ("t1_mprage_sag", "GRE", "T1 MPRAGE SAG", 6, {"motion": 1.6, "gibbs": 1.2}),
    ("t2_tse_ax", "SE", "T2 TSE AX", 5, {"ghosting": 1.3}),
    ("t2_flair_ax", "FLAIR", "T2 FLAIR AX", 5, {"ghosting": 1.5, "motion": 1.2}),
    ("dwi_b1000_ax", "EPI", "DWI b1000 AX", 4, {"susceptibility": 2.5, "chemical_shift": 1.8}),
    ("swi_ax", "GRE", "SWI AX", 4, {"susceptibility": 2.0}),
]
BASE_RATES = {
    "motion": 0.08, "ghosting": 0.04, "aliasing": 0.03, "chemical_shift": 0.03,
    "susceptibility": 0.05, "zipper": 0.01, "spike": 0.015, "gibbs": 0.04, "bias_field": 0.04,
    "noise": 0.03,
}  # fmt: skip


@dataclass(frozen=True)
class DemoScanner:
    key: str
    label: str
    field_t: float
    per_week: int  # series a week
    bias: dict[str, float]  # rate multipliers: this scanner's weaknesses
    verdict_s: float


def _scanners(site_a: Site, site_b: Site) -> list[tuple[Site, DemoScanner]]:
    return [
        (
            site_a,
            DemoScanner("a-mr1", "MR-1 3T (synthetic)", 3.0, 26, {"chemical_shift": 1.5}, 0.6),
        ),
        (site_a, DemoScanner("a-mr2", "MR-2 1.5T (synthetic)", 1.5, 20, {"noise": 2.0}, 0.8)),
        (site_b, DemoScanner("b-mr1", "MR-B 3T (synthetic)", 3.0, 18, {"motion": 1.4}, 1.1)),
    ]


def history_exists(site: Site) -> bool:
    return Study.objects.filter(site=site, description=SYNTHETIC).exists()


def _model_version() -> ModelVersion:
    digest = hashlib.sha256(MODEL_NAME.encode()).hexdigest()
    version, _ = ModelVersion.objects.get_or_create(
        sha256=digest,
        defaults={
            "name": MODEL_NAME,
            "version": "synthetic",
            "weights_key": "",
            "classes": list(BASE_RATES),
            "card": "Not a model: marks the synthetic demo history of the dashboards.",
        },
    )
    return version


def _uid(rng: random.Random) -> str:
    return f"2.25.{rng.getrandbits(100)}"


@transaction.atomic
def demo_history_create(
    *,
    site_a: Site,
    site_b: Site,
    weeks: int = 16,
    jump_scanner: str = "a-mr2",
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Create ``weeks`` weeks of synthetic scored series ending this week; returns the number
    of series. The same seed gives the same history (relative to the current week)."""
    rng = random.Random(SEED)
    model = _model_version()
    now = timezone.now()
    this_monday = (now - dt.timedelta(days=now.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    studies: list[Study] = []
    series_rows: list[Series] = []
    instances: list[Instance] = []
    runs: list[ScoringRun] = []
    scores: list[InstanceScore] = []
    findings: list[Finding] = []
    scanners = []
    for site, spec in _scanners(site_a, site_b):
        scanner, _ = Scanner.objects.get_or_create(
            site=site,
            pseudonym=f"synthetic-demo-{spec.key}",
            defaults={"label": spec.label, "field_strength_t": spec.field_t},
        )
        scanners.append((site, spec, scanner))
    steps = weeks * len(scanners)
    for week_index in range(weeks):
        monday = this_monday - dt.timedelta(weeks=weeks - 1 - week_index)
        current = week_index == weeks - 1
        for site, spec, scanner in scanners:
            jump = current and spec.key == jump_scanner
            n_series = max(6, int(rng.gauss(spec.per_week, spec.per_week * 0.12)))
            n_studies = max(2, n_series // len(PROTOCOLS))
            for _ in range(n_studies):
                span = (now - monday).total_seconds() - 3600 if current else 5 * 86400
                start = monday + dt.timedelta(
                    seconds=rng.uniform(7 * 3600, max(7 * 3600 + 60, span))
                )
                study = Study(
                    site=site, study_uid=_uid(rng), description=SYNTHETIC,
                    acquired_week=monday.date(),
                )  # fmt: skip
                studies.append(study)
                number = 1
                queue = list(PROTOCOLS)
                while queue:
                    protocol, family, description, n_inst, weak = queue.pop(0)
                    arrived = start + dt.timedelta(minutes=4 * number)
                    present = []
                    for artifact, base in BASE_RATES.items():
                        rate = base * weak.get(artifact, 1.0) * spec.bias.get(artifact, 1.0)
                        if jump and artifact == "spike":
                            rate = 0.45  # the injected hardware fault: RF spikes on this scanner
                        if rng.random() < rate:
                            present.append(artifact)
                    suitability = max(0.05, min(1.0, rng.gauss(0.93, 0.04) - 0.22 * len(present)))
                    nondiagnostic = suitability < 0.5
                    series = Series(
                        study=study, site=site, scanner=scanner, series_uid=_uid(rng),
                        series_number=number, description=f"{description} (synthetic)",
                        protocol=protocol, sequence_family=family,
                        status=SeriesStatus.SCORED, instance_count=n_inst,
                        suitability=suitability,
                    )  # fmt: skip
                    run = ScoringRun(
                        series=series, site=site, model_version=model, status=RunStatus.DONE,
                        suitability=suitability, nondiagnostic=nondiagnostic,
                        reason=SYNTHETIC.lower(), started_at=arrived,
                        finished_at=arrived + dt.timedelta(seconds=30),
                    )  # fmt: skip
                    series.received_at = arrived
                    series_rows.append(series)
                    runs.append(run)
                    for k in range(n_inst):
                        instance = Instance(
                            series=series, site=site, sop_uid=_uid(rng),
                            sop_class_uid="1.2.840.10008.5.1.4.1.1.4", instance_number=k + 1,
                            storage_key="", rows=256, columns=256,
                            field_strength_t=spec.field_t, suitability=suitability,
                        )  # fmt: skip
                        instance.received_at = arrived + dt.timedelta(seconds=5 * k)
                        instances.append(instance)
                        verdict = rng.lognormvariate(0, 0.35) * spec.verdict_s
                        scores.append(
                            InstanceScore(
                                run=run, instance=instance, suitability=suitability,
                                nondiagnostic=nondiagnostic, reason=SYNTHETIC.lower(),
                                created_at=instance.received_at + dt.timedelta(seconds=verdict),
                            )
                        )  # fmt: skip
                        for artifact in present:
                            if k == 0 or rng.random() < 0.5:
                                findings.append(
                                    Finding(
                                        run=run, instance=instance, site=site,
                                        artifact_type=artifact, area_px=rng.randint(50, 4000),
                                        area_fraction=0.02, head_fraction=0.05,
                                        confidence=0.8, advice="synthetic demo history",
                                    )
                                )  # fmt: skip
                    number += 1
                    # A non-diagnostic series is often repeated in the same study.
                    if nondiagnostic and rng.random() < 0.6 and number < 9:
                        queue.insert(0, (protocol, family, description, n_inst, weak))
            if progress:
                progress(
                    week_index * len(scanners) + scanners.index((site, spec, scanner)) + 1, steps
                )
    Study.objects.bulk_create(studies)
    Series.objects.bulk_create(series_rows)
    ScoringRun.objects.bulk_create(runs)
    Instance.objects.bulk_create(instances, batch_size=2000)
    InstanceScore.objects.bulk_create(scores, batch_size=2000)
    Finding.objects.bulk_create(findings, batch_size=2000)
    # auto_now_add stamped "now" on the way in; put the history back in its weeks.
    for series, run in zip(series_rows, runs, strict=True):
        series.current_run = run
        series.received_at = run.started_at or now
    Series.objects.bulk_update(series_rows, ["received_at", "current_run"], batch_size=1000)
    for instance in instances:
        instance.received_at = instance.series.received_at + dt.timedelta(
            seconds=5 * ((instance.instance_number or 1) - 1)
        )
    Instance.objects.bulk_update(instances, ["received_at"], batch_size=2000)
    return len(series_rows)
