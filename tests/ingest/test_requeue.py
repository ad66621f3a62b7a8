"""Queued work whose message the broker lost (a Redis restarted without its append-only file, a
publish to a broker that was away) is published again, once, and only when no worker began it
and nothing waits in its queue (security checklist C-06)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest
from django.utils import timezone

from backend.jobs.models import JobRecord
from backend.jobs.services import lost_jobs_requeue, queue_waiting
from tests.deid.builders import mr_dataset, to_bytes

# A queue of the real broker that no worker consumes: what is published there stays to be read.
IDLE_QUEUE = "requeue-test"


def _drain(queue: str) -> list[list[str]]:
    """Take every message waiting in ``queue``; their task arguments."""
    from backend.config.celery import app

    taken = []
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        while (message := channel.basic_get(queue=queue, no_ack=True)) is not None:
            args, _kwargs, _embed = message.decode()
            taken.append(list(args))
    return taken


@pytest.fixture
def lead_a(site_a):
    from tests.conftest import _persona

    return _persona("lead_a", site_a, "annotation_lead")


@pytest.fixture
def idle_queue(redis_clean):
    _drain(IDLE_QUEUE)
    yield IDLE_QUEUE
    _drain(IDLE_QUEUE)


@pytest.mark.django_db
@pytest.mark.servers
def test_a_lost_job_is_published_once_and_a_begun_one_never(idle_queue):
    from backend.ingest.tasks import upload_process_task

    JobRecord.objects.create(
        task_id="t-1", name=upload_process_task.name, subject="begun", state="done"
    )
    subjects = ["lost-1", "begun", "lost-2"]
    got = lost_jobs_requeue(task=upload_process_task, queue=idle_queue, subjects=subjects)
    assert got == ["lost-1", "lost-2"]
    assert queue_waiting(idle_queue) == 2
    # Messages wait in the queue: the workers are behind, and publishing again would run a job
    # twice. Nothing is published until the queue is empty.
    assert lost_jobs_requeue(task=upload_process_task, queue=idle_queue, subjects=subjects) == []
    assert _drain(idle_queue) == [["lost-1"], ["lost-2"]]
    # A begun job of another task does not count for this one.
    JobRecord.objects.create(task_id="t-2", name="another.task", subject="lost-1", state="done")
    assert lost_jobs_requeue(task=upload_process_task, queue=idle_queue, subjects=["lost-1"]) == [
        "lost-1"
    ]


@pytest.mark.django_db
@pytest.mark.servers
def test_a_fine_tuning_left_queued_is_published_again_after_the_wait(
    idle_queue, monkeypatch, site_a, lead_a
):
    import annotation.tasks
    from annotation.models import Campaign, FineTune, JobStatus, TrainingSet
    from annotation.training import finetune_requeue_lost

    monkeypatch.setattr(annotation.tasks, "QUEUE", idle_queue)  # no worker runs it here
    campaign = Campaign.objects.create(site=site_a, name="c", created_by=lead_a.user)
    ts = TrainingSet.objects.create(
        campaign=campaign, site=site_a, version=1, path="/nonexistent", sha256="0" * 64,
        created_by=lead_a.user,
    )  # fmt: skip
    jobs = [
        FineTune.objects.create(training_set=ts, site=site_a, requested_by=lead_a.user)
        for _ in range(3)
    ]
    old = timezone.now() - dt.timedelta(minutes=11)
    FineTune.objects.filter(pk__in=[j.pk for j in jobs[:2]]).update(created_at=old)
    FineTune.objects.filter(pk=jobs[1].pk).update(status=JobStatus.RUNNING)
    # Only the one queued 11 minutes ago: the other old one is running, the third is recent.
    assert finetune_requeue_lost() == [str(jobs[0].pk)]
    assert _drain(idle_queue) == [[str(jobs[0].pk)]]
    assert finetune_requeue_lost(older_than_s=0) == [str(jobs[0].pk), str(jobs[2].pk)]


CHILD = """
import sys
from backend.accounts.models import Site, User
from backend.ingest.uploads import upload_append, upload_complete, upload_create
data = open(sys.argv[3], "rb").read()
upload = upload_create(
    user=User.objects.get(pk=int(sys.argv[1])), site=Site.objects.get(pk=int(sys.argv[2])),
    filename="IM0001", size=len(data),
)
upload_append(upload_id=str(upload.pk), offset=0, data=data)
print(upload_complete(upload_id=str(upload.pk)).pk)
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.servers
def test_an_upload_completed_while_the_broker_was_away_is_processed_after_the_requeue(
    operator_a, site_a, celery_worker_process, tmp_path
):
    """The fault for real: a process whose broker is a dead port completes an upload. The
    request still succeeds (the upload is queued: completing again would not publish again),
    the message is lost, and the requeue sweep hands the upload to the real worker."""
    from django.conf import settings

    from backend.ingest.models import Upload, UploadStatus
    from backend.ingest.uploads import upload_requeue_lost
    from tests.conftest import _free_port, _server_env, _wait_for

    env = _server_env(settings.DATABASES["default"]["NAME"])
    env["CELERY_BROKER_URL"] = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    path = tmp_path / "slice.dcm"
    path.write_bytes(to_bytes(mr_dataset(5)))
    code = "import django; django.setup()\n" + CHILD
    child = subprocess.run(
        [sys.executable, "-c", code, str(operator_a.user.pk), str(site_a.pk), str(path)],
        env={**env, "DJANGO_SETTINGS_MODULE": "backend.config.settings"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    upload = Upload.objects.get(pk=child.stdout.split()[-1])
    assert upload.status == UploadStatus.QUEUED
    assert upload_requeue_lost() == [], "too recent for the default wait"
    assert upload_requeue_lost(older_than_s=0) == [str(upload.pk)]

    def processed() -> bool:
        upload.refresh_from_db()
        return upload.status in (UploadStatus.DONE, UploadStatus.FAILED)

    _wait_for(processed, 120, "the requeued upload")
    assert upload.status == UploadStatus.DONE, upload.error
    assert [r["status"] for r in upload.results] == ["accepted"]
    assert upload_requeue_lost(older_than_s=0) == []
