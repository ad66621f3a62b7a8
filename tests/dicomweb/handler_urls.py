"""Views of kinds the project's URLs do not serve on every installation, to compare the ASGI
handlers on them (``tests/dicomweb/test_stow_one_hop.py``): a file, a stream and a view that
fails."""

from __future__ import annotations

from pathlib import Path

from django.http import FileResponse, HttpRequest, StreamingHttpResponse
from django.urls import path

# A file of the checkout larger than a few 64 KiB messages.
SERVED_FILE = Path(__file__).resolve().parents[2] / "ml" / "weights" / "artiscan-full.onnx"


def a_file(request: HttpRequest) -> FileResponse:
    return FileResponse(SERVED_FILE.open("rb"), content_type="application/octet-stream")


def a_stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(iter([b"first,", b"second,", b"third"]))


def a_failure(request: HttpRequest) -> None:
    raise RuntimeError("a view that fails")


urlpatterns = [
    path("file/", a_file),
    path("stream/", a_stream),
    path("fails/", a_failure),
]
