"""Running the product on the embedded defaults (SQLite, the broker that needs no server) in
processes of their own, beside a test run whose database is PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def embedded_env(tmp_path: Path) -> dict[str, str]:
    """This environment without a database or Redis URL, on a scratch var directory."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update({"ARTISCAN_VAR_DIR": str(tmp_path / "var"), "PYTHONPATH": str(ROOT)})
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """``manage.py ARGS`` in ``env``; its output (fails the test on a non-zero exit)."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def run_embedded(tmp_path: Path, script: str) -> str:
    """``script`` run by ``manage.py shell`` on a freshly migrated embedded installation."""
    env = embedded_env(tmp_path)
    manage(env, "migrate", "--noinput", "-v0")
    return manage(env, "shell", "-v0", "-c", script)
