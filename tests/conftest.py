"""Shared fixtures: personas (who is asking) and real servers (Celery worker, ASGI server)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


@dataclass
class Persona:
    user: object
    site: object | None
    token: str


def _persona(username: str, site: object | None, role: str | None, superuser: bool = False):
    from backend.accounts.models import Role
    from backend.accounts.services import token_create, user_create

    memberships = [(site, Role(role))] if site is not None and role else []
    user = user_create(
        username=username, password=PASSWORD, memberships=memberships, is_superuser=superuser
    )
    _, raw = token_create(user=user, name="test")
    return Persona(user=user, site=site, token=raw)


@pytest.fixture
def scratch_store(settings, tmp_path) -> Path:
    """An empty store of this test's own under ``tmp_path``, encrypted with a fresh key."""
    import base64

    settings.MEDIA_ROOT = tmp_path / "store"
    settings.STORAGE_KEYS = "t1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
    return Path(settings.MEDIA_ROOT)


@pytest.fixture
def site_a(db):
    from tests.factories import SiteFactory

    return SiteFactory(name="Site A", slug="site-a")


@pytest.fixture
def site_b(db):
    from tests.factories import SiteFactory

    return SiteFactory(name="Site B", slug="site-b")


@pytest.fixture
def radiologist_a(site_a):
    return _persona("rad_a", site_a, "radiologist")


@pytest.fixture
def admin_a(site_a):
    return _persona("admin_a", site_a, "site_admin")


@pytest.fixture
def radiologist_b(site_b):
    return _persona("rad_b", site_b, "radiologist")


@pytest.fixture
def admin_b(site_b):
    return _persona("admin_b", site_b, "site_admin")


@pytest.fixture
def annotator_a(site_a):
    return _persona("annotator_a", site_a, "annotator")


@pytest.fixture
def superuser(db):
    return _persona("root", None, None, superuser=True)


@pytest.fixture
def api():
    """A DRF client; ``api.as_(persona)`` authenticates with the persona's bearer token."""
    from rest_framework.test import APIClient

    class Client(APIClient):
        def as_(self, persona: Persona | None) -> Client:
            if persona is None:
                self.credentials()
            else:
                self.credentials(HTTP_AUTHORIZATION=f"Bearer {persona.token}")
            return self

    return Client()


@pytest.fixture
def study_a(site_a):
    from tests.factories import InstanceFactory, SeriesFactory, StudyFactory

    study = StudyFactory(site=site_a)
    series = SeriesFactory(study=study)
    InstanceFactory.create_batch(3, series=series)
    return study


# --- real servers -------------------------------------------------------------------------


def _server_env(django_db_setup_name: str) -> dict[str, str]:
    """The environment of a child process that must see the test database and test Redis."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    if db["ENGINE"].endswith("postgresql"):
        host = db.get("HOST") or "127.0.0.1"
        port = db.get("PORT") or 5432
        user = db.get("USER") or "postgres"
        env["DATABASE_URL"] = f"postgres://{user}@{host}:{port}/{django_db_setup_name}"
    env["PYTHONPATH"] = str(ROOT)
    # The tests' alert webhooks listen on loopback, which an installation refuses unless listed.
    env.setdefault("ARTISCAN_WEBHOOK_ALLOW", "127.0.0.1")
    return env


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def requires_servers() -> None:
    from django.conf import settings

    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql") or not settings.REDIS_URL:
        pytest.fail(
            "This test needs PostgreSQL and Redis: run it through `make test`, which sets "
            "DATABASE_URL and REDIS_URL."
        )


@pytest.fixture(scope="session")
def redis_clean(django_db_setup):
    """The suite owns the Redis database it is given: start from an empty one."""
    import redis
    from django.conf import settings

    requires_servers()
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


_WORKER = {"started": False}  # set once the session's worker process runs


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, redis_clean, tmp_path_factory):
    """A real ``celery worker`` process (prefork, one child) on the test database and Redis."""
    from django.conf import settings

    log = tmp_path_factory.mktemp("celery") / "worker.log"
    env = _server_env(settings.DATABASES["default"]["NAME"])
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "backend.config", "worker",
             "-Q", "cpu,gpu", "--concurrency", "1", "--loglevel", "INFO",
             "--without-gossip", "--without-mingle", "-n", f"test-{os.getpid()}@%h"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for(lambda: b" ready." in log.read_bytes() or proc.poll() is not None, 90, "worker")
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited:\n{log.read_text()[-3000:]}")
        _WORKER["started"] = True
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _listening_process(
    command: list[str], *, env: dict[str, str], port: int, log: Path, what: str
) -> Iterator[subprocess.Popen]:
    """Start ``command`` and wait until it accepts TCP connections on ``port``."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def listening() -> bool:
        if proc.poll() is not None:
            return True
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        _wait_for(listening, 60, what)
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{log.read_text()[-3000:]}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def asgi_server(django_db_setup, redis_clean, tmp_path_factory) -> Iterator[str]:
    """A real daphne serving the ASGI app on the test database; yields ``host:port``."""
    from django.conf import settings

    port = _free_port()
    env = _server_env(settings.DATABASES["default"]["NAME"])
    # The server serves hashed static files, as in production: collect them first.
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT, env=env, check=True, timeout=120,
    )  # fmt: skip
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    command.append("backend.config.asgi:application")
    log = tmp_path_factory.mktemp("daphne") / "daphne.log"
    with _listening_process(command, env=env, port=port, log=log, what="daphne"):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def dicom_scp(django_db_setup, redis_clean, tmp_path_factory) -> Iterator[int]:
    """A real ``manage.py dicom_scp`` (pynetdicom) on the test database; yields its port."""
    from django.conf import settings

    port = _free_port()
    env = _server_env(settings.DATABASES["default"]["NAME"])
    command = [sys.executable, "manage.py", "dicom_scp", "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    log = tmp_path_factory.mktemp("scp") / "scp.log"
    with _listening_process(command, env=env, port=port, log=log, what="dicom_scp"):
        yield port


@pytest.fixture(autouse=True)
def _unhashed_static_files(settings):
    """Pages render without a prior ``collectstatic`` (the manifest only exists after one)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def operator_a(site_a):
    return _persona("operator_a", site_a, "operator")


@pytest.fixture
def orthanc(tmp_path) -> Iterator[dict[str, object]]:
    """A real Orthanc (Debian's package) on free ports with a temporary configuration; yields
    its URL and credentials. Locked down as the security checklist asks (section 7)."""
    import json

    http_port, dicom_port = _free_port(), _free_port()
    config = {
        "Name": "artiscan-test",
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomServerEnabled": False,
        "StorageDirectory": str(tmp_path / "storage"),
        "IndexDirectory": str(tmp_path / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {"artiscan": "orthanc-test-password"},
        "ExecuteLuaEnabled": False,
        "RestApiWriteToFileSystemEnabled": False,
        "WebDavEnabled": False,
        "StableAge": 1,
        "Plugins": [],
    }
    path = tmp_path / "orthanc.json"
    path.write_text(json.dumps(config))
    with _listening_process(
        ["/usr/sbin/Orthanc", str(path)],
        env=dict(os.environ),
        port=http_port,
        log=tmp_path / "orthanc.log",
        what="Orthanc",
    ):
        yield {
            "url": f"http://127.0.0.1:{http_port}",
            "username": "artiscan",
            "password": "orthanc-test-password",
        }


@pytest.fixture(autouse=True)
def _drain_workers(request):
    """After a test with real servers, let the shared worker go idle before the database is
    flushed: a task still scoring holds row locks that deadlock the flush. Queued leftovers of
    the test are purged (they refer to rows that are about to disappear)."""
    db = request.node.get_closest_marker("django_db")
    transactional = db is not None and db.kwargs.get("transaction", False)
    # A transactional test commits, so its ingest may hand tasks to the session's worker when an
    # earlier test started one: drain then too.
    if request.node.get_closest_marker("servers") is None and not (
        transactional and _WORKER["started"]
    ):
        yield
        return
    request.getfixturevalue("transactional_db")  # set up first, so flushed after this teardown
    yield
    from backend.config.celery import app
    from backend.jobs.models import JobRecord

    app.control.purge()

    unchanged: dict[str, Any] = {"jobs": None, "since": 0.0}

    def quiet() -> bool:
        # Nothing queued, nothing held by a worker and no task running, twice in a row (late
        # acks: a message stays in the broker's unacknowledged set from its fetch, prefetched
        # or running, to the task's end); polled, so a test whose ingest is still being scored
        # goes on as soon as the scoring ends.
        if _broker_idle(app) and not JobRecord.objects.filter(state="running").exists():
            time.sleep(0.1)
            if _broker_idle(app) and not JobRecord.objects.filter(state="running").exists():
                return True
        # A message left unacknowledged by a killed worker waits for the visibility timeout:
        # then idle for two seconds (no task running and none started) is what counts.
        jobs = (JobRecord.objects.filter(state="running").count(), JobRecord.objects.count())
        if jobs != unchanged["jobs"]:
            unchanged.update(jobs=jobs, since=time.monotonic())
            return False
        return jobs[0] == 0 and time.monotonic() - unchanged["since"] >= 2.0

    _wait_for(quiet, 180, "idle worker")


def _broker_idle(app) -> bool:
    """No message in the Redis broker's queues nor in its unacknowledged set (kombu's Redis
    transport, with its default ack emulation, keeps every delivered message there until it is
    acknowledged; a message between its pop and that write is in neither for an instant, which
    the caller's second probe covers); False for any other transport or a broker error."""
    from amqp.exceptions import ChannelError
    from kombu.exceptions import OperationalError

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.default_channel
            unacked = getattr(channel, "unacked_key", None)
            if unacked is None or not hasattr(channel, "client"):
                return False
            if channel.client.hlen(unacked):
                return False
            for name in app.amqp.queues:
                try:
                    if channel.queue_declare(queue=name, passive=True).message_count:
                        return False
                except ChannelError:  # Redis drops an empty list: the usual answer for "none"
                    continue
            return True
    except (OperationalError, OSError):
        return False
