"""OHIF's prebuilt viewer served at ``/ohif/`` from ``deploy/install-ohif.sh``'s folder: a check
that a third-party DICOMweb viewer opens our studies (docs/ohif.md).

Opt-in: the route exists only with ``ARTISCAN_OHIF=true`` (default: ``DJANGO_DEBUG``) and an
installed viewer. Same origin as ``/dicomweb/``, so the session cookie authenticates OHIF's
requests and every study it shows is scoped and audited like any other DICOMweb access. The
files themselves are OHIF's public code; the pages still ask for a login first, so a signed-out
visitor lands on the login page instead of an empty study list.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.views.static import serve

from backend.config.env import env_bool, env_optional

OHIF_VERSION_DIR = Path("node_modules") / "@ohif" / "app" / "dist"


def ohif_dist() -> Path:
    """Where the prebuilt viewer is (``$ARTISCAN_OHIF_DIR``, default ``var/ohif`` in the
    checkout, the install script's default)."""
    base = env_optional("ARTISCAN_OHIF_DIR") or str(Path(settings.BASE_DIR) / "var" / "ohif")
    return Path(base) / OHIF_VERSION_DIR


def ohif_enabled() -> bool:
    return env_bool("ARTISCAN_OHIF", settings.DEBUG) and (ohif_dist() / "index.html").is_file()


def ohif_file(request: HttpRequest, path: str = "") -> HttpResponseBase:
    """A file of the viewer, or its index.html for the viewer's own routes (a single-page app:
    ``/ohif/viewer?StudyInstanceUIDs=...`` is a page of OHIF, not a file)."""
    root = ohif_dist()
    candidate = (root / path).resolve() if path else root
    if not candidate.is_relative_to(root.resolve()):
        raise Http404
    if not path or not candidate.is_file():
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        path = "index.html"
    response: HttpResponseBase = serve(request, path, document_root=str(root))
    if path == "index.html" or path == "app-config.js":
        response["Cache-Control"] = "no-store"  # a reinstall takes effect at the next load
    return response
