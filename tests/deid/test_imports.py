"""The profile is pure: importing it pulls in no Django, so any process (a C-STORE listener, a
worker, a script) can apply it without settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = """
import sys
import backend.deid.profile, backend.deid.safety, backend.deid.table, backend.deid.table_e11
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"django", "rest_framework", "celery",
                                                         "tensorflow", "keras", "torch"})
print(",".join(heavy))
"""


def test_importing_the_profile_imports_no_django_and_no_ml_framework():
    result = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.stdout.strip() == ""
