"""A fine-tuning whose worker is killed mid-training resumes from its last epoch when the task
is redelivered, and the killed worker leaves no orphan training process behind. Real
processes: the first delivery runs in its own Python process (as a Celery worker child would),
which is SIGKILLed once an epoch is written; the redelivery runs here."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from annotation import training
from annotation.models import Campaign, FineTune, JobStatus, TrainingSet
from ml.__main__ import main as ml_main
from tests.conftest import ROOT, _server_env, _wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RUNNER = "annotation.ml_runner"


def _runner_pids(out: Path) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"{RUNNER} .*--out {out}"], capture_output=True, text=True
    )  # fmt: skip
    return [int(pid) for pid in found.stdout.split()]


def _epochs(out: Path) -> list[str]:
    history = out / "run" / "history.csv"
    return history.read_text().splitlines()[1:] if history.is_file() else []


def test_a_killed_fine_tune_resumes_from_its_last_epoch(
    lead_a, site_a, settings, tmp_path, django_db_setup
):
    data = tmp_path / "data"
    assert ml_main(["dataset", "--out", str(data), "--slices", "16", "--seed", "3", "--quiet"]) == 0
    campaign = Campaign.objects.create(site=site_a, name="c", created_by=lead_a.user)
    ts = TrainingSet.objects.create(
        campaign=campaign, site=site_a, version=1, path=str(data), sha256="0" * 64,
        created_by=lead_a.user,
    )  # fmt: skip
    epochs = 4
    job = FineTune.objects.create(
        training_set=ts, site=site_a, requested_by=lead_a.user,
        params={"epochs": epochs, "steps": 3, "crop": 64, "batch": 2, "learning_rate": 1e-4},
    )  # fmt: skip
    out = Path(settings.VAR_DIR) / "finetune" / str(job.pk)

    from django.conf import settings as live

    env = _server_env(live.DATABASES["default"]["NAME"])
    env["ARTISCAN_VAR_DIR"] = str(settings.VAR_DIR)
    code = (
        "import django, os, sys; os.environ.setdefault('DJANGO_SETTINGS_MODULE', "
        "'backend.config.settings'); django.setup(); "
        "from annotation.training import finetune_run; finetune_run(finetune_id=sys.argv[1])"
    )
    first = subprocess.Popen([sys.executable, "-c", code, str(job.pk)], cwd=ROOT, env=env)
    try:
        _wait_for(lambda: len(_epochs(out)) >= 1 or first.poll() is not None, 300, "an epoch")
        assert first.poll() is None, "the first delivery ended before it could be killed"
        assert _runner_pids(out), "the training child is not running"
        first.send_signal(signal.SIGKILL)  # the worker dies mid-training
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    done_before = _epochs(out)
    assert 1 <= len(done_before) < epochs
    # The kernel took the training child with its worker: nothing trains on unseen.
    _wait_for(lambda: not _runner_pids(out), 30, "the training child to die with its worker")
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING  # as a dead worker leaves it

    # Seeded training would write the same first rows if it started over, so mark the run
    # directory: starting over removes it.
    (out / "run" / "kept.marker").write_text("from the first delivery")
    result = training.finetune_run(finetune_id=job.pk)  # the redelivered task

    assert result.status == JobStatus.DONE, (out / "runner.log").read_text()[-3000:]
    after = _epochs(out)
    assert len(after) == epochs
    assert after[: len(done_before)] == done_before
    assert (out / "run" / "kept.marker").is_file()  # resumed in place, not started over
    assert result.candidate is not None and result.progress == 1.0


def test_a_run_of_other_parameters_is_not_resumed(tmp_path):
    out = tmp_path / "job"
    (out / "run").mkdir(parents=True)
    (out / "run" / "last.keras").write_bytes(b"x")
    (out / "run" / "history.csv").write_text("epoch,loss\n1,0.5\n")
    command = [sys.executable, "-m", RUNNER, "--epochs", "4"]
    (out / "command.json").write_text(json.dumps(command))
    assert training._resumable(out, command)
    assert not training._resumable(out, [*command[:-1], "5"])  # other parameters
    (out / "run" / "last.keras").unlink()
    assert not training._resumable(out, command)  # nothing to resume from
    assert not training._resumable(tmp_path / "absent", command)
