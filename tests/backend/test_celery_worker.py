"""A real Celery worker process on PostgreSQL and Redis: tasks enqueued on commit run once."""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from backend.jobs.models import JobRecord, JobState
from backend.studies.models import Series
from backend.studies.services import series_summary_enqueue
from tests.factories import InstanceFactory, SeriesFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


def _wait(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_task_enqueued_on_commit_runs_once_and_its_result_lands(celery_worker_process):
    series = SeriesFactory()
    InstanceFactory.create_batch(4, series=series)
    with transaction.atomic():
        series_summary_enqueue(series_id=series.pk)
    assert _wait(lambda: JobRecord.objects.filter(subject=str(series.pk), state="done").exists())
    record = JobRecord.objects.get(subject=str(series.pk))
    assert record.attempts == 1
    assert record.last_pid != celery_worker_process.pid  # ran in the prefork child
    assert Series.objects.get(pk=series.pk).instance_count == 4


def test_a_rolled_back_transaction_enqueues_nothing(celery_worker_process):
    doomed = SeriesFactory()
    InstanceFactory(series=doomed)

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        series_summary_enqueue(series_id=doomed.pk)
        raise Rollback
    # The worker takes tasks in order with one child and prefetch 1: once a sentinel enqueued
    # afterwards is done, anything the rolled-back transaction had queued would have run.
    sentinel = SeriesFactory()
    with transaction.atomic():
        series_summary_enqueue(series_id=sentinel.pk)
    assert _wait(lambda: JobRecord.objects.filter(subject=str(sentinel.pk), state="done").exists())
    assert not JobRecord.objects.filter(subject=str(doomed.pk)).exists()
    assert Series.objects.get(pk=doomed.pk).instance_count == 0


def test_a_task_refuses_anything_but_ids_as_arguments():
    from backend.studies.tasks import series_summarize_task

    with pytest.raises(TypeError, match="must be ids"):
        series_summarize_task({"PatientName": "DOE^JOHN"})


def test_a_job_that_never_finishes_is_quarantined_after_the_attempt_limit(settings):
    from backend.jobs.services import job_attempt_begin

    settings.CELERY_MAX_ATTEMPTS = 2
    states = [job_attempt_begin(task_id="t-1", name="poison", subject="s").state for _ in range(3)]
    assert states == [JobState.RUNNING, JobState.RUNNING, JobState.QUARANTINED]
    assert JobRecord.objects.get(task_id="t-1").attempts == 3


def test_retries_are_not_counted_as_deliveries_that_did_not_finish(settings):
    """A Celery retry keeps its task id: each attempt that ended in an error the task raised
    (a retry's) is Celery's max_retries to bound; only deliveries that never finished count
    against the attempt limit (a webhook's six retries were cut off after three)."""
    from backend.jobs.services import job_attempt_begin, job_attempt_fail

    settings.CELERY_MAX_ATTEMPTS = 2
    for _ in range(6):
        record = job_attempt_begin(task_id="t-r", name="retrying", subject="s")
        assert record.state == JobState.RUNNING
        job_attempt_fail(record=record, error=TimeoutError())
    states = [
        job_attempt_begin(task_id="t-r", name="retrying", subject="s").state for _ in range(3)
    ]
    assert states == [JobState.RUNNING, JobState.RUNNING, JobState.QUARANTINED]
    record = JobRecord.objects.get(task_id="t-r")
    assert (record.attempts, record.failures) == (9, 6)
    assert record.error == "gave up after 2 attempts that did not finish"


def test_every_task_that_retries_on_an_outage_retries_on_the_database_and_redis():
    """``autoretry_for=(ConnectionError,)`` named Python's own exception, which neither the
    database's, psycopg's nor Redis' errors derive from: an outage failed the task for good."""
    import redis.exceptions
    from django import db

    from backend.config.celery import app
    from backend.jobs.tasks import TrackedTask

    app.loader.import_default_modules()
    tracked = [t for t in app.tasks.values() if isinstance(t, TrackedTask)]
    assert len(tracked) >= 6
    for task in tracked:
        retried = tuple(getattr(task, "autoretry_for", ()))
        if not retried:
            continue
        for error in (db.OperationalError, db.InterfaceError, redis.exceptions.ConnectionError):
            assert issubclass(error, retried), (task.name, error)


def test_a_task_that_meets_a_database_outage_runs_once_the_database_is_back(
    celery_worker_process,
):
    """A real outage of the worker's database: new connections to it refused
    (``ALLOW_CONNECTIONS false``, the test's own connection stays). The task cannot even record
    its attempt; it used to fail and its message was acked and gone. Now it retries with a
    backoff and runs once connections are allowed again."""
    import psycopg
    from django.db import connection

    series = SeriesFactory()
    InstanceFactory.create_batch(2, series=series)
    params = connection.get_connection_params()
    params["dbname"] = "postgres"  # a database cannot refuse connections from its own session
    name = connection.ops.quote_name(connection.settings_dict["NAME"])

    def allow(yes: bool) -> None:
        with psycopg.connect(**params, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {str(yes).lower()}")

    allow(False)
    try:
        with transaction.atomic():
            series_summary_enqueue(series_id=series.pk)
        # Long enough for the worker to have tried at least twice (1 s, then 2 s later).
        time.sleep(4)
        assert not JobRecord.objects.filter(subject=str(series.pk)).exists()
    finally:
        allow(True)
    assert _wait(lambda: JobRecord.objects.filter(subject=str(series.pk), state="done").exists())
    assert Series.objects.get(pk=series.pk).instance_count == 2


def test_a_task_with_its_own_guards_may_take_more_deliveries(settings, site_a):
    """The scoring task counts attempts per slice: its task-level limit is the sum of its
    slices' budgets, so a series with a poison slice is not cut off with the rest unscored."""
    from backend.jobs.services import job_attempt_begin
    from backend.scoring.tasks import series_score_task
    from tests.factories import InstanceFactory, SeriesFactory, StudyFactory

    settings.CELERY_MAX_ATTEMPTS = 1
    settings.ARTISCAN_SCORING_MAX_ATTEMPTS = 2
    series = SeriesFactory(study=StudyFactory(site=site_a))
    InstanceFactory.create_batch(3, series=series)
    limit = series_score_task.attempt_limit(str(series.pk))
    assert limit == 2 * 3 + 1
    states = [
        job_attempt_begin(task_id="t-2", name="score", subject="s", max_attempts=limit).state
        for _ in range(limit + 1)
    ]
    assert states.count(JobState.RUNNING) == limit and states[-1] == JobState.QUARANTINED


def test_every_task_has_a_time_limit():
    """A decoder or a model that hangs held its worker for good (and every redelivery one
    more): each task's child is killed past a limit, and fine-tuning's is its own."""
    from django.conf import settings

    from backend.config.celery import app

    app.loader.import_default_modules()
    ours = [t for n, t in app.tasks.items() if n.startswith(("backend.", "annotation."))]
    assert len(ours) >= 8
    for task in ours:
        limit = task.time_limit or app.conf.task_time_limit
        assert limit and limit <= 24 * 3600, task.name
    assert app.conf.task_time_limit == settings.CELERY_TASK_TIME_LIMIT
    assert app.tasks["annotation.tasks.finetune_task"].time_limit == 24 * 3600


def test_the_celery_configuration_is_json_only_with_late_acks():
    from backend.config.celery import app

    conf = app.conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    # A task killed at its hard time limit is delivered again (and counted: a TrackedTask is
    # quarantined when it hangs every time), not acked and lost. The periodic tasks that are
    # not tracked are acked (beat runs them again; redelivered, one that hangs would loop).
    from backend.jobs.tasks import TrackedTask

    app.loader.import_default_modules()
    ours = [t for t in app.tasks.values() if t.name.startswith(("backend.", "annotation."))]
    for task in ours:
        assert task.acks_late, task.name
        assert task.acks_on_timeout is not isinstance(task, TrackedTask), task.name
    assert {t.name.rsplit(".", 1)[1] for t in ours if t.acks_on_timeout} >= {
        "unscored_sweep_task", "ingest_purge_task", "access_alerts_task",
    }  # fmt: skip
    assert conf.worker_prefetch_multiplier == 1
    assert set(conf.task_queues) >= {"cpu", "gpu"}
    assert (
        conf.broker_transport_options["visibility_timeout"]
        == (conf.result_backend_transport_options["visibility_timeout"])
    )
