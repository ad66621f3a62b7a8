"""A serving process freezes the loaded application out of garbage collection."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import _server_env

PROBE = """
import gc, sys
import django
django.setup()
from backend.config.startup import freeze_startup_objects
frozen = freeze_startup_objects()
print(frozen, len(gc.get_objects(2)), "backend.dicomweb.views" in sys.modules)
"""


def test_the_loaded_application_is_frozen_and_a_full_collection_skips_it() -> None:
    env = _server_env("unused.sqlite3")
    env["DJANGO_SETTINGS_MODULE"] = "backend.config.settings"
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    frozen, oldest, views = out.stdout.split()
    # The URL configuration was imported first (every view module), then everything alive was
    # frozen: a full collection now traverses almost nothing of the application.
    assert views == "True"
    assert int(frozen) > 50_000
    assert int(oldest) < int(frozen) // 100
