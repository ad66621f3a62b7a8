"""Settings come from the environment only, and a malformed value stops start-up loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _start(
    env_overrides: dict[str, str], tmp_path: Path, *args: str
) -> subprocess.CompletedProcess:
    dropped = {"DATABASE_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update({"ARTISCAN_VAR_DIR": str(tmp_path / "var"), **env_overrides})
    return subprocess.run(
        [sys.executable, "manage.py", *(args or ("check",))],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ARTISCAN_MAX_REQUEST_MB", "lots"),
        ("DJANGO_DEBUG", "maybe"),
        ("ARTISCAN_VISIBILITY_TIMEOUT", "-5"),
        ("ALLOWED_HOSTS", "a.example,,b.example"),
        ("DATABASE_URL", "notadb://x"),
    ],
)
def test_a_malformed_value_stops_start_up_naming_the_variable(tmp_path, variable, value):
    result = _start({variable: value}, tmp_path)
    assert result.returncode != 0
    assert variable in result.stderr


def test_a_secret_can_come_from_a_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("k" * 30 + "e" * 30 + "y-from-file\n")
    result = _start(
        {"SECRET_KEY_FILE": str(secret)},
        tmp_path,
        "shell",
        "-c",
        "from django.conf import settings; print(settings.SECRET_KEY)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("y-from-file")


def test_an_unreadable_secret_file_is_named(tmp_path):
    result = _start({"SECRET_KEY_FILE": str(tmp_path / "missing")}, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY_FILE" in result.stderr


def test_production_settings_pass_the_deploy_check(tmp_path):
    result = _start(
        {
            "ARTISCAN_HTTPS": "true",
            "SECRET_KEY": "x" * 20 + "production-secret-key-with-enough-entropy-0123456789",
            "ALLOWED_HOSTS": "artiscan.hospital.example",
            "ARTISCAN_DEID_KEY": "d" * 40,
            "ARTISCAN_STORAGE_KEYS": "k2:" + "A" * 43 + "=",
        },
        tmp_path,
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_https_mode_refuses_to_invent_a_secret_key(tmp_path):
    result = _start({"ARTISCAN_HTTPS": "true"}, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
