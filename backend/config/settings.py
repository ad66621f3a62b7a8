"""ArtiScan settings: every value comes from the environment (see ``backend/config/env.py``).

Two modes share every code path:

* **embedded** (nothing set): SQLite under ``var/``, Celery on kombu's SQLAlchemy transport over a
  SQLite file, and a database-backed channel layer so a worker process can reach browsers.
* **site**: ``DATABASE_URL`` points at PostgreSQL and ``REDIS_URL`` at Redis, which then carries the
  Celery broker, the Celery results and the Channels layer.
"""

from __future__ import annotations

import base64
import ctypes
import os
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from backend.config.env import (
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_optional,
    env_str,
)

django_stubs_ext.monkeypatch()  # ModelAdmin[T], QuerySet[T] at run time, for the type hints

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("ARTISCAN_VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DJANGO_DEBUG", False)
HTTPS = env_bool("ARTISCAN_HTTPS", False)


def _installation_secret(
    name: str, filename: str, generate: Callable[[], str] = lambda: secrets.token_urlsafe(64)
) -> str:
    """``name`` from the environment, else (embedded mode only) a random value generated once into
    ``var/<filename>``: a site installation must set every secret explicitly."""
    configured = env_optional(name)
    if configured:
        return configured
    if HTTPS:
        raise ImproperlyConfigured(f"{name} (or {name}_FILE) must be set when ARTISCAN_HTTPS.")
    path = VAR_DIR / filename
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(generate())
    return path.read_text().strip()


def _secret_key() -> str:
    key = _installation_secret("SECRET_KEY", "secret_key")
    if len(key) < 50 or len(set(key)) < 5:
        raise ImproperlyConfigured("SECRET_KEY: must be at least 50 characters of varied text.")
    return key


SECRET_KEY = _secret_key()
# Keyed HMAC behind every pseudonymous UID, patient pseudonym and date shift. Changing it changes
# every new UID, so a site sets it once and keeps it (backend/deid).
DEID_KEY = _installation_secret("ARTISCAN_DEID_KEY", "deid_key").encode()
if len(DEID_KEY) < 32:
    raise ImproperlyConfigured("ARTISCAN_DEID_KEY: must be at least 32 characters.")
# Encryption at rest (backend/storage): "id:base64-key" pairs of 32-byte AES keys, comma-
# separated; the first encrypts new files, all decrypt (rotate: put a new key first, then run
# `manage.py storage_rotate`).
STORAGE_KEYS = _installation_secret(
    "ARTISCAN_STORAGE_KEYS",
    "storage_keys",
    generate=lambda: "k1:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "backend.config.apps.ArtiScanAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "backend.accounts",
    "backend.audit",
    "backend.studies",
    "backend.scoring",
    "backend.realtime",
    "backend.jobs",
    "backend.storage",
    "backend.deid",
    "backend.ingest",
    "backend.dicomweb",
    "backend.web",
    "backend.review",
    "backend.dashboards",
    "annotation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "backend.config.middleware.AsyncWhiteNoiseMiddleware",  # WhiteNoise, async-capable
    "backend.audit.middleware.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "backend.accounts.middleware.SessionIdleTimeoutMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "backend.config.urls"
WSGI_APPLICATION = "backend.config.wsgi.application"
ASGI_APPLICATION = "backend.config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

# --- Database -------------------------------------------------------------------------------
_sqlite_keepers: list[sqlite3.Connection] = []


def _sqlite_hold_open(path: Path) -> None:
    """Keep one connection to the SQLite file ``path`` open for the life of this process.

    SQLite checkpoints the WAL into the database file, and syncs it, whenever the *last*
    connection to the file closes. Django opens and closes a connection per request (under
    ASGI each request runs on a thread of its own), so without this every request paid a
    checkpoint or two (about 5 ms each, more on a busy disk). Checkpoints still happen, every
    1000 pages, inside a commit. A forked child never closes the inherited connection (closing
    one across fork() is what SQLite forbids): it is kept referenced forever there.
    """
    try:
        keeper = sqlite3.connect(path, timeout=20, check_same_thread=False)
        # Persistent in the file; reading it also maps the WAL index, which makes this a reader.
        keeper.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:
        return  # only a cost: the next process tries again
    _sqlite_keepers.append(keeper)


def _sqlite_keepers_after_fork() -> None:
    for keeper in _sqlite_keepers:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(keeper))  # never deallocated, never closed
    _sqlite_keepers.clear()


os.register_at_fork(after_in_child=_sqlite_keepers_after_fork)

_database_url = env_optional("DATABASE_URL")
if _database_url:
    try:
        # Under ASGI (daphne) each request may run on another thread, so a persistent connection
        # is never reused and piles up until PostgreSQL refuses clients: close after each
        # request unless a deployment sets a pooler's age.
        DATABASES = {
            "default": dj_database_url.parse(
                _database_url, conn_max_age=env_int("ARTISCAN_DB_CONN_MAX_AGE", 0, minimum=0)
            )
        }
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL: {exc}") from exc
    # A pool of this many connections per process (psycopg_pool), shared by every request
    # thread: a request then borrows a connection instead of opening one (~6 ms here). Only for
    # processes that do not fork after connecting (a pool's sockets must not cross fork()):
    # ``manage.py serve`` sets it for its daphne processes; 0 (default) opens one per request.
    _pool_size = env_int("ARTISCAN_DB_POOL_SIZE", 0, minimum=0)
    if _pool_size:
        if DATABASES["default"].get("CONN_MAX_AGE"):
            raise ImproperlyConfigured(
                "ARTISCAN_DB_POOL_SIZE and ARTISCAN_DB_CONN_MAX_AGE: set one or the other."
            )
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": _pool_size,
            "timeout": 30,
        }
else:
    # NORMAL (default): a commit survives the crash of any process, not a power loss (WAL is
    # synced at checkpoints). FULL syncs the WAL at every commit: power-loss durable, one more
    # disk sync per request. PostgreSQL (site mode) syncs every commit.
    _SQLITE_SYNCHRONOUS = env_choice("ARTISCAN_SQLITE_SYNCHRONOUS", "NORMAL", ("NORMAL", "FULL"))
    DATABASES = {
        "default": {
            # Django's SQLite backend whose writers queue for the write lock instead of
            # polling for it with growing sleeps (backend/config/sqlite/base.py).
            "ENGINE": "backend.config.sqlite",
            "NAME": str(VAR_DIR / "artiscan.sqlite3"),
            "OPTIONS": {
                # WAL lets the web process read while a worker writes; IMMEDIATE avoids the
                # "database is locked" upgrade deadlock between two writers.
                "init_command": (
                    f"PRAGMA journal_mode=WAL; PRAGMA synchronous={_SQLITE_SYNCHRONOUS};"
                ),
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            # A thread keeps its connection between requests (the web server lends each request
            # a pooled thread: backend/config/asgi.py), instead of opening the file and running
            # the PRAGMAs above for every request; a connection in error is still replaced.
            "CONN_MAX_AGE": env_int("ARTISCAN_SQLITE_CONN_MAX_AGE", 600, minimum=0),
        }
    }
    _sqlite_hold_open(VAR_DIR / "artiscan.sqlite3")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["backend.accounts.lockout.LockoutModelBackend"]
# Wrong passwords in a row that lock an account, and for how long (backend/accounts/lockout.py).
ARTISCAN_LOGIN_MAX_FAILURES = env_int("ARTISCAN_LOGIN_MAX_FAILURES", 10, minimum=1)
ARTISCAN_LOGIN_LOCK_MINUTES = env_int("ARTISCAN_LOGIN_LOCK_MINUTES", 15, minimum=1)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "backend" / "static_build"]
(BASE_DIR / "backend" / "static_build").mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if DEBUG:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
MEDIA_ROOT = VAR_DIR / "store"

# --- Request limits (checklist H-02) --------------------------------------------------------
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("ARTISCAN_MAX_REQUEST_MB", 64, minimum=1) * 1024 * 1024
# A request body up to the limit above stays in memory while Django reads it: above this size
# Django's ASGI handler spools it to a temporary file, i.e. wrote a STOW-RS of original
# (identifiable, not yet de-identified) files to disk and read it back (~1 ms a 400 KB file).
# Under daphne, Twisted spooled it even before Django saw it: backend/config/daphne_body.py.
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("ARTISCAN_MAX_FILES_PER_REQUEST", 100, minimum=1)
# One DICOM instance is never read past this, whatever lengths it declares.
ARTISCAN_MAX_INSTANCE_BYTES = env_int("ARTISCAN_MAX_INSTANCE_MB", 256, minimum=1) * 1024 * 1024
ARTISCAN_QUARANTINE_DAYS = env_int("ARTISCAN_QUARANTINE_DAYS", 30, minimum=1)
# The weight file the scoring workers load; empty = the shipped default of ml.pipeline.
ARTISCAN_MODEL_WEIGHTS = env_str("ARTISCAN_MODEL_WEIGHTS", "")
# A slice whose scoring fails (or kills its worker) this many times is quarantined.
ARTISCAN_SCORING_MAX_ATTEMPTS = env_int("ARTISCAN_SCORING_MAX_ATTEMPTS", 3, minimum=1)
# How long a worker's claim on a batch of slices (up to 16) holds before another may take it: a
# batch takes seconds, so a claim left by a killed worker frees its slices after this, not after
# the broker's visibility timeout (an hour).
ARTISCAN_SCORING_CLAIM_S = env_int("ARTISCAN_SCORING_CLAIM_S", 300, minimum=10)

# --- Security -------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SESSION_COOKIE_AGE = env_int("ARTISCAN_SESSION_SECONDS", 8 * 3600, minimum=60)
# ... and ended sooner when unused this long (backend/accounts/middleware.py).
ARTISCAN_SESSION_IDLE_SECONDS = env_int("ARTISCAN_SESSION_IDLE_SECONDS", 30 * 60, minimum=60)
SECURE_SSL_REDIRECT = HTTPS and env_bool("ARTISCAN_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("ARTISCAN_HSTS_SECONDS", 31536000 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env_bool("ARTISCAN_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "backend.accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ArtiScan API",
    "DESCRIPTION": "MRI artifact detection: studies, series, scoring results and audit trail.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The schema and its docs page are for signed-in users (security checklist A-01: no view
    # is AllowAny but the allow-list in tests/backend/test_site_isolation.py).
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
}

# --- Redis, Celery, Channels ----------------------------------------------------------------
REDIS_URL = env_optional("REDIS_URL")
CELERY_VISIBILITY_TIMEOUT = env_int("ARTISCAN_VISIBILITY_TIMEOUT", 3600, minimum=10)
# A live-events connection's membership of its sites' groups lasts this long in the channel
# layer unless renewed; each connection renews it every ARTISCAN_WS_GROUP_REFRESH_S (at most a
# quarter of it), so a workstation left connected for days keeps hearing its verdicts.
ARTISCAN_CHANNEL_GROUP_EXPIRY_S = env_int("ARTISCAN_CHANNEL_GROUP_EXPIRY_S", 86400, minimum=2)
ARTISCAN_WS_GROUP_REFRESH_S = min(
    env_int("ARTISCAN_WS_GROUP_REFRESH_S", 6 * 3600, minimum=1),
    max(1, ARTISCAN_CHANNEL_GROUP_EXPIRY_S // 4),
)
if REDIS_URL:
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
    CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", REDIS_URL)
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # channels_redis waits with a 5 s blocking pop; redis-py 8's default 5 s socket
            # timeout would cut every connection that stays quiet that long.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
                "prefix": env_str("ARTISCAN_CHANNEL_PREFIX", "asgi"),
                "group_expiry": ARTISCAN_CHANNEL_GROUP_EXPIRY_S,
            },
        }
    }
else:
    (VAR_DIR / "celery").mkdir(exist_ok=True)
    # The embedded broker's file in WAL mode (a property of the file, set once): a publish is
    # one append to the WAL instead of a rollback journal written, synced and deleted (~12 ms
    # a scoring request on a busy disk), and the worker's polls no longer block publishers.
    # Each publish still syncs the WAL (kombu leaves SQLite's default synchronous=FULL): a
    # scoring request that was answered for is never lost, power loss included.
    _sqlite_hold_open(VAR_DIR / "celery" / "broker.sqlite3")
    CELERY_BROKER_URL = env_str(
        "CELERY_BROKER_URL", f"sqla+sqlite:///{VAR_DIR / 'celery' / 'broker.sqlite3'}"
    )
    CELERY_RESULT_BACKEND = env_str(
        "CELERY_RESULT_BACKEND", f"db+sqlite:///{VAR_DIR / 'celery' / 'results.sqlite3'}"
    )
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "backend.realtime.layers.DatabaseChannelLayer",
            "CONFIG": {"group_expiry": ARTISCAN_CHANNEL_GROUP_EXPIRY_S},
        }
    }
    # The SQLAlchemy transport polls its table; kombu's default 1 s would add up to a second to
    # every slice's verdict (applied in backend/config/celery.py: this transport hands every
    # transport option to SQLAlchemy's create_engine, which refuses this one).
    ARTISCAN_EMBEDDED_BROKER_POLL_S = 0.05
if REDIS_URL:
    # Redis redelivers an unacked task after this many seconds; set in every place it is read
    # (celery#9339). The SQLAlchemy transport takes no such option.
    # kombu sweeps for abandoned (unacked) messages every interval × throttle seconds, 100 s by
    # default: sweep often enough that redelivery after a killed worker is bounded by roughly
    # the visibility timeout plus a quarter of it.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
        "unacked_restore_interval": max(1, min(10, CELERY_VISIBILITY_TIMEOUT // 4)),
        "unacked_restore_throttle": 1,
    }
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_QUEUES: dict[str, dict[str, str]] = {"cpu": {}, "gpu": {}}
CELERY_TASK_ROUTES = {"backend.scoring.tasks.*": {"queue": "gpu"}}
CELERY_TASK_TRACK_STARTED = True
# Nothing reads Celery's task results (our own tables hold every outcome). Storing them cost each
# publish a result backend made anew on every request thread (the database one is per thread),
# ~4 ms of every STOW-RS request, and the worker a write per task.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TIMEZONE = "UTC"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_MAX_ATTEMPTS = env_int("ARTISCAN_TASK_MAX_ATTEMPTS", 3, minimum=1)
# A task still running after this many seconds has its worker child killed: a decoder or a
# model that hangs must not hold a worker for good. The message is delivered again (Celery acks
# a timed-out message unless told not to: ACKS_ON_TIMEOUT) and the attempt counted, so one that
# hangs every time is quarantined (JobRecord). Fine-tuning runs for hours and has its own limit.
CELERY_TASK_ACKS_ON_TIMEOUT = False
CELERY_TASK_TIME_LIMIT = env_int("ARTISCAN_TASK_TIME_LIMIT_S", 1800, minimum=10)
ARTISCAN_FINETUNE_TIME_LIMIT_S = env_int("ARTISCAN_FINETUNE_TIME_LIMIT_S", 24 * 3600, minimum=60)
# How often beat looks for queued uploads and fine-tunings whose message the broker lost.
_REQUEUE_EVERY_S = float(env_int("ARTISCAN_REQUEUE_EVERY_S", 60, minimum=5))
# Beat gets a new broker connection after a failed publish (Celery's keeps a dead one forever).
CELERY_BEAT_SCHEDULER = "backend.config.beat:ReconnectingScheduler"
# Site-quality dashboards (backend/dashboards): rollups refreshed by beat, alerts by mail/webhook.
CELERY_BEAT_SCHEDULE = {
    "dashboards-refresh": {
        "task": "backend.dashboards.tasks.dashboards_refresh_task",
        "schedule": float(env_int("ARTISCAN_ROLLUP_EVERY_S", 300, minimum=10)),
    },
    # Accepted slices whose scoring request was lost after the commit (broker down, process
    # died before publishing: backend/ingest/dispatch.py) are asked for again.
    "unscored-sweep": {
        "task": "backend.ingest.tasks.unscored_sweep_task",
        "schedule": float(env_int("ARTISCAN_SCORE_SWEEP_EVERY_S", 60, minimum=5)),
    },
    # Bursts of denied attempts on a site's data (backend/dashboards/access.py).
    "access-alerts": {
        "task": "backend.dashboards.tasks.access_alerts_task",
        "schedule": float(env_int("ARTISCAN_ACCESS_ALERTS_EVERY_S", 60, minimum=5)),
    },
    # Uploads and fine-tunings whose message the broker lost (a Redis restarted without its
    # append-only file) are handed to a worker again (backend.jobs.services.lost_jobs_requeue).
    "upload-requeue": {
        "task": "backend.ingest.tasks.upload_requeue_task",
        "schedule": _REQUEUE_EVERY_S,
    },
    "finetune-requeue": {
        "task": "annotation.tasks.finetune_requeue_task",
        "schedule": _REQUEUE_EVERY_S,
    },
    # Refused originals past ARTISCAN_QUARANTINE_DAYS, abandoned and stuck uploads' chunks.
    "ingest-purge": {
        "task": "backend.ingest.tasks.ingest_purge_task",
        "schedule": float(env_int("ARTISCAN_PURGE_EVERY_S", 3600, minimum=10)),
    },
}
# One user denied this many times on one site's data within the window raises an access alert.
ARTISCAN_DENIED_BURST = env_int("ARTISCAN_DENIED_BURST", 20, minimum=1)
ARTISCAN_DENIED_BURST_WINDOW_S = env_int("ARTISCAN_DENIED_BURST_WINDOW_S", 600, minimum=10)
# Ingest turns new files away (STOW-RS 503, C-STORE A700, uploads retried) while the local
# store's filesystem has less than this free.
ARTISCAN_STORE_MIN_FREE_MB = env_int("ARTISCAN_STORE_MIN_FREE_MB", 1024, minimum=0)
# A queued upload or fine-tuning that no worker has begun this long after it was queued, with
# nothing waiting in its queue, has lost its message: it is published again.
ARTISCAN_REQUEUE_AFTER_S = env_int("ARTISCAN_REQUEUE_AFTER_S", 600, minimum=1)
# What the unfinished uploads of one user, and of one site, may announce in all (their chunks
# wait in the store): a new upload past either is refused with 413.
ARTISCAN_UPLOAD_QUOTA_USER_BYTES = env_int("ARTISCAN_UPLOAD_QUOTA_USER_GB", 8, minimum=1) * 2**30
ARTISCAN_UPLOAD_QUOTA_SITE_BYTES = env_int("ARTISCAN_UPLOAD_QUOTA_SITE_GB", 32, minimum=1) * 2**30
# An upload queued or in processing this long will not finish: it fails and its chunks go.
ARTISCAN_UPLOAD_STUCK_H = env_int("ARTISCAN_UPLOAD_STUCK_H", 24, minimum=1)
# A slice unscored this long after it arrived counts as lost by the sweep above.
ARTISCAN_SCORE_SWEEP_AGE_S = env_int("ARTISCAN_SCORE_SWEEP_AGE_S", 120, minimum=1)
# ... and looks back this many hours at most (a slice left longer needs `manage.py rescore`).
ARTISCAN_SCORE_SWEEP_WINDOW_H = env_int("ARTISCAN_SCORE_SWEEP_WINDOW_H", 24, minimum=1)
# Ingest publishes a series' event and scoring request at once, then at most once per this many
# seconds while its slices keep arriving (everything that came meanwhile in one).
ARTISCAN_INGEST_COALESCE_S = env_int("ARTISCAN_INGEST_COALESCE_MS", 100, minimum=0) / 1000
ARTISCAN_ALERT_ALPHA = env_int("ARTISCAN_ALERT_FWER_PERMILLE", 10, minimum=1) / 1000
ARTISCAN_PUBLIC_URL = env_str("ARTISCAN_PUBLIC_URL", "http://127.0.0.1:8000")
# Alert webhooks go to public addresses only; intranet relays (host names or CIDR networks) must
# be listed here, so a site administrator cannot aim the sender at internal services.
ARTISCAN_WEBHOOK_ALLOW = env_list("ARTISCAN_WEBHOOK_ALLOW", [])
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "artiscan@localhost")

# --- Logging: no request bodies, no DICOM headers; a request id on every line ---------------
LOG_LEVEL = env_str("ARTISCAN_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "backend.audit.middleware.RequestIdLogFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "WARNING"},
        # Ten lines per DICOM SEG it builds ("copy attributes of module ..."), at INFO.
        "highdicom": {"level": "WARNING"},
    },
}
ADMINS: list[tuple[str, str]] = []  # error e-mails would carry request data off the premises
