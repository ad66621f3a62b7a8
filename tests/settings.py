"""The test run's settings: the product's own, on a scratch ``VAR_DIR`` of the run's own.

Without it a test run and the developer's ``make demo`` shared ``var/``: its store, its keys and
its training runs. The test site's first primary key is the demo site's too, and both
de-identified the demo series with the same key, so a test wrote (and could delete) the demo's
files under the same storage keys. The directory is made here, in the test process, before
Django reads its settings; the servers and the worker the tests start inherit it through the
environment, and it is removed when the run ends (or by the next run, when this one was killed).
``ARTISCAN_VAR_DIR`` set by the caller wins.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "artiscan-tests-var-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if "ARTISCAN_VAR_DIR" not in os.environ:
    # A run that was killed (no atexit) left its directory: those of dead runs go now.
    for old in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        pid = old.name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    _scratch = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
    os.environ["ARTISCAN_VAR_DIR"] = _scratch
    atexit.register(shutil.rmtree, _scratch, True)

from backend.config.settings import *  # noqa: E402, F403
