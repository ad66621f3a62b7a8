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


def test_the_celery_configuration_is_json_only_with_late_acks():
    from backend.config.celery import app

    conf = app.conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert set(conf.task_queues) >= {"cpu", "gpu"}
    assert (
        conf.broker_transport_options["visibility_timeout"]
        == (conf.result_backend_transport_options["visibility_timeout"])
    )
