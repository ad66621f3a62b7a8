"""ml/ and gpu_ops/ never import the web side, and importing ml stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_hold():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " 0 broken" in result.stdout


def _loaded(imports: str, modules: set[str]) -> list[str]:
    """Which of ``modules`` (top-level names or full dotted ones) a fresh interpreter holds
    after running ``imports``."""
    code = (
        f"import sys\n{imports}\n"
        f"wanted = {sorted(modules)!r}\n"
        "print(','.join(sorted(m for m in wanted if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return [m for m in result.stdout.strip().split(",") if m]


def test_importing_ml_loads_no_tensorflow_keras_or_django():
    imports = "import ml, ml.__main__, gpu_ops"
    web = {"tensorflow", "keras", "django", "celery", "channels", "rest_framework"}
    assert _loaded(imports, web) == []


def test_the_web_process_loads_no_model_scipy_or_highdicom():
    """MISSION: the web process never imports TensorFlow and stays ≤ 300 MB. What it loads to
    serve (the ASGI application and every URL's view) leaves out the model and the libraries
    only workers need: SciPy (~15 MB: the dashboards' alert test imports it when it runs) and
    highdicom with pydicom's SR dictionaries (~25 MB: SEG objects are built by the workers)."""
    imports = (
        "import os\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'backend.config.settings')\n"
        "import django; django.setup()\n"
        "from backend.config import asgi\n"
        "from django.urls import get_resolver; get_resolver().url_patterns"
    )
    heavy = {"tensorflow", "keras", "jax", "onnxruntime", "scipy", "highdicom"}
    heavy.add("pydicom.sr.codedict")
    assert _loaded(imports, heavy) == []
