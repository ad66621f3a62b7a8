"""Scored series for the dashboard tests: real rows (study, series, instances, a finished run,
instance scores and findings), placed in a chosen week."""

from __future__ import annotations

import datetime as dt

from backend.scoring.models import Finding, InstanceScore, ModelVersion, RunStatus, ScoringRun
from backend.studies.models import Instance, Series, SeriesStatus
from tests.factories import InstanceFactory, SeriesFactory, StudyFactory

BASE_WEEK = dt.date(2026, 3, 2)  # a Monday


def at_week(week: int, hour: int = 12) -> dt.datetime:
    """Wednesday noon of week ``week`` after BASE_WEEK, in UTC."""
    day = BASE_WEEK + dt.timedelta(weeks=week, days=2)
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)


def scored_series_create(
    *,
    model_version: ModelVersion,
    site,
    scanner,
    week: int = 0,
    arrived: dt.datetime | None = None,
    protocol: str = "t2_tse_ax",
    family: str = "SE",
    suitability: float = 0.9,
    nondiagnostic: bool = False,
    artifacts: tuple[str, ...] = (),
    instances: int = 2,
    delay_s: float = 1.0,
    study=None,
    minute: int = 0,
    description: str = "T2 TSE AX",
    finished_at: dt.datetime | None = None,
) -> Series:
    """A scored series that arrived at ``arrived`` (default: ``week`` weeks after BASE_WEEK)."""
    study = study or StudyFactory(site=site)
    arrived = (arrived or at_week(week)) + dt.timedelta(minutes=minute)
    series = SeriesFactory(
        study=study,
        scanner=scanner,
        protocol=protocol,
        sequence_family=family,
        description=description,
    )
    insts = InstanceFactory.create_batch(instances, series=series)
    run = ScoringRun.objects.create(
        series=series,
        site=site,
        model_version=model_version,
        status=RunStatus.DONE,
        suitability=suitability,
        nondiagnostic=nondiagnostic,
        finished_at=finished_at or arrived + dt.timedelta(seconds=delay_s),
    )
    for inst in insts:
        InstanceScore.objects.create(
            run=run,
            instance=inst,
            suitability=suitability,
            nondiagnostic=nondiagnostic,
            created_at=arrived + dt.timedelta(seconds=delay_s),
        )
        for artifact in artifacts:
            Finding.objects.create(
                run=run,
                instance=inst,
                site=site,
                artifact_type=artifact,
                area_px=10,
                area_fraction=0.01,
                confidence=0.9,
            )
    Instance.objects.filter(series=series).update(received_at=arrived)
    Series.objects.filter(pk=series.pk).update(
        received_at=arrived,
        status=SeriesStatus.SCORED,
        suitability=suitability,
        current_run=run,
    )
    series.refresh_from_db()
    return series
