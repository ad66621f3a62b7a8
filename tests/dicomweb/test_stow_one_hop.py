"""STOW-RS through the served ASGI application (``OneHopHandler``: Django's handler with its
middleware in sync mode, in one hop to the request's thread) answers exactly as Django's own
ASGI handler does: the same status, headers and body for a stored series, a duplicate, a wrong
or missing token, another site, a malformed body and a refused file, and the same audit rows."""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.core.signals import request_finished

from backend.audit.models import AuditEvent
from backend.config import asgi
from backend.studies.models import Instance
from tests.deid.builders import mr_dataset, to_bytes
from tests.dicomweb.multipart import multipart_body

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the handler's thread commits
    pytest.mark.usefixtures("scratch_store"),
]

BOUNDARY = "onehop"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def _body(*parts: bytes, content_type: str = "application/dicom") -> bytes:
    return multipart_body(*parts, boundary=BOUNDARY, content_type=content_type)


def _post(
    app: Any,
    body: bytes,
    *,
    token: str | None,
    content_type: str = MULTIPART,
    query: str = "",
    cookie: str | None = None,
    split_body: int | None = None,
) -> tuple[int, dict[str, str], bytes]:
    headers = [(b"content-type", content_type.encode()), (b"host", b"testserver")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    headers.append((b"content-length", str(len(body)).encode()))
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return _exchange(app, "POST", "/dicomweb/studies", headers, body, query, split_body=split_body)


def _exchange(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    query: str,
    *,
    split_body: int | None = None,
    messages: list[int] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request through ``app``; ``split_body``: the body arrives in two messages, cut
    there (as uvicorn sends it); ``messages``: gets the length of each body message sent."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }

    async def exchange() -> tuple[int, dict[str, str], bytes]:
        communicator = ApplicationCommunicator(app, scope)
        if split_body is not None:
            first = {"type": "http.request", "body": body[:split_body], "more_body": True}
            await communicator.send_input(first)
            body_left = body[split_body:]
        else:
            body_left = body
        await communicator.send_input({"type": "http.request", "body": body_left})
        start = await communicator.receive_output(60)
        content = b""
        while True:
            message = await communicator.receive_output(60)
            content += message.get("body", b"")
            if messages is not None:
                messages.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        await communicator.wait(60)
        answer = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return start["status"], answer, content

    return async_to_sync(exchange)()


def _alike(one_hop: tuple[int, dict[str, str], bytes], django: tuple[int, dict[str, str], bytes]):
    (status_a, headers_a, body_a), (status_b, headers_b, body_b) = one_hop, django
    assert status_a == status_b
    # Each request has an id of its own; everything else is the same.
    assert headers_a.pop("x-request-id") and headers_b.pop("x-request-id")
    assert headers_a == headers_b
    assert json.loads(body_a or b"null") == json.loads(body_b or b"null")


SERVED = asgi.application  # what daphne serves: every request through OneHopHandler
DJANGO = asgi.django_asgi_app  # Django's own ASGI handler, async middleware chain


def test_a_stored_series_and_its_duplicate_are_answered_alike_and_audited_once_each(
    operator_a,
):
    body = _body(to_bytes(mr_dataset(1)), to_bytes(mr_dataset(2)))
    first = _post(SERVED, body, token=operator_a.token)
    assert first[0] == 200, first[2][:300]
    again = _post(DJANGO, body, token=operator_a.token)  # duplicates: the same answer
    request_id = first[1]["x-request-id"]
    _alike(first, again)
    assert Instance.objects.count() == 2
    audit = list(AuditEvent.objects.filter(action="create").order_by("id"))
    assert len(audit) == 2
    assert audit[0].request_id == request_id
    assert [
        (a.object_type, a.site_id, a.username, a.roles, a.source_ip, a.outcome) for a in audit
    ] == [("instance", operator_a.site.pk, "operator_a", "operator", "127.0.0.1", "success")] * 2
    assert audit[0].study_uid == audit[1].study_uid


def test_refusals_are_answered_alike(operator_a, radiologist_b, site_b, client):
    from tests.conftest import PASSWORD

    assert client.login(username="operator_a", password=PASSWORD)
    session = f"sessionid={client.cookies['sessionid'].value}"
    good = _body(to_bytes(mr_dataset(3)))
    cases = [
        ("no token", good, {"token": None}),
        ("a wrong token", good, {"token": "not-a-token"}),
        ("another site", good, {"token": operator_a.token, "query": f"site={site_b.slug}"}),
        ("a session without its CSRF token", good, {"token": None, "cookie": session}),
        ("not multipart", to_bytes(mr_dataset(3)), {"content_type": "application/dicom"}),
        ("no boundary", good, {"content_type": "multipart/related"}),
        ("unclosed", good[: -len(f"--{BOUNDARY}--\r\n")], {}),
        ("no DICOM part", _body(b"hello", content_type="text/plain"), {}),
        ("a refused file", _body(b"not a DICOM file at all" * 10), {}),
    ]
    for what, body, options in cases:
        options.setdefault("token", operator_a.token)
        one_hop = _post(SERVED, body, **options)
        django = _post(DJANGO, body, **options)
        assert one_hop[0] >= 400, what
        _alike(one_hop, django)
    assert not Instance.objects.exists()
    # A token of site B's radiologist cannot store into site A either.
    refused = _post(SERVED, good, token=radiologist_b.token, query="site=site-a")
    assert refused[0] == 403
    assert not Instance.objects.exists()


def _get(
    app: Any, path: str, headers: dict[str, str], method: str = "GET", **options: Any
) -> tuple[int, dict[str, str], bytes]:
    encoded = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return _exchange(app, method, path, [(b"host", b"testserver"), *encoded], b"", "", **options)


def test_every_request_takes_the_one_hop_route(monkeypatch):
    taken: list[str] = []

    async def recorded(self: Any, scope: Any, receive: Any, send: Any) -> None:
        taken.append(f"{scope['method']} {scope['path']}")

    monkeypatch.setattr(asgi.OneHopHandler, "handle", recorded)
    requests = [
        ("POST", "/dicomweb/studies"),
        ("GET", "/dicomweb/studies"),
        ("GET", "/health/"),
        ("POST", "/api/uploads/"),
    ]
    for method, path in requests:
        scope = {"type": "http", "method": method, "path": path}
        async_to_sync(SERVED)(scope, None, None)
    assert taken == [f"{method} {path}" for method, path in requests]


def test_reads_are_answered_alike(operator_a, radiologist_a, radiologist_b):
    """What the viewer and the API ask for most — WADO-RS metadata and frames, QIDO-RS, the
    signed-in user, the health check — and the refusals (no token, another site's token, an
    unknown path) answer the same through the one hop as through Django's own handler."""
    ds = mr_dataset(31)
    stored = _post(SERVED, _body(to_bytes(ds)), token=operator_a.token)
    assert stored[0] == 200, stored[2][:300]
    instance = Instance.objects.select_related("series__study").get()
    base = (
        f"/dicomweb/studies/{instance.series.study.study_uid}"
        f"/series/{instance.series.series_uid}/instances/{instance.sop_uid}"
    )
    token = {"Authorization": f"Bearer {radiologist_a.token}"}
    dicom_json = {**token, "Accept": "application/dicom+json"}
    octets = {**token, "Accept": 'multipart/related; type="application/octet-stream"'}
    other_site = {"Authorization": f"Bearer {radiologist_b.token}"}
    cases = [
        ("metadata", f"{base}/metadata", dicom_json, 200),
        ("a frame", f"{base}/frames/1", octets, 200),
        ("a missing frame", f"{base}/frames/9", octets, 404),
        ("QIDO-RS", "/dicomweb/studies", dicom_json, 200),
        ("me", "/api/me/", token, 200),
        ("health", "/health/", {}, 200),
        ("no token", f"{base}/metadata", {"Accept": "application/dicom+json"}, 401),
        ("another site's reader", f"{base}/metadata", {**dicom_json, **other_site}, 404),
        ("another site's frame", f"{base}/frames/1", {**octets, **other_site}, 404),
        ("unknown path", "/no/such/page/", token, 404),
    ]
    for what, path, headers, status in cases:
        one_hop, django = _get(SERVED, path, headers), _get(DJANGO, path, headers)
        assert one_hop[0] == status, (what, one_hop[2][:300])
        assert one_hop[1].pop("x-request-id") and django[1].pop("x-request-id")
        if what == "a frame":  # each multipart answer draws its own boundary
            boundary = one_hop[1]["content-type"].split("boundary=")[1].strip('"')
            other = django[1]["content-type"].split("boundary=")[1].strip('"')
            django = (django[0], django[1], django[2].replace(other.encode(), boundary.encode()))
            django[1]["content-type"] = one_hop[1]["content-type"]
            assert len(one_hop[2]) > ds.Rows * ds.Columns * 2  # the pixels, whole
        assert one_hop == django, what


def test_a_finished_request_lets_go_of_its_body(operator_a):
    """The request outlives its answer in reference cycles (DRF's request and view) until a
    full garbage collection; its body (tens of MB for a series) must not live on with it."""
    body = _body(*(to_bytes(mr_dataset(i)) for i in (21, 22, 23)))
    held_before = sys.getrefcount(body)
    gc.collect()
    gc.disable()  # what a busy process is between its full collections
    try:
        answer = _post(SERVED, body, token=operator_a.token)
        assert answer[0] == 200, answer[2][:300]
        assert Instance.objects.count() == 3
        assert sys.getrefcount(body) == held_before
    finally:
        gc.enable()


def test_a_body_in_two_messages_and_a_head_request_are_answered_alike(operator_a):
    """uvicorn sends a body in several messages (daphne, patched, in one): the one hop replays
    them into Django's reader."""
    body = _body(to_bytes(mr_dataset(41)))
    stored = _post(SERVED, body, token=operator_a.token, split_body=len(body) // 3)
    assert stored[0] == 200, stored[2][:300]
    assert Instance.objects.count() == 1
    again = _post(DJANGO, body, token=operator_a.token, split_body=len(body) // 3)
    _alike(stored, again)  # the duplicate's answer is the first one's
    head = _get(SERVED, "/health/", {}, method="HEAD"), _get(DJANGO, "/health/", {}, method="HEAD")
    assert head[0][0] == 200
    assert head[0][1].pop("x-request-id") and head[1][1].pop("x-request-id")
    assert head[0] == head[1]


@pytest.mark.urls("tests.dicomweb.handler_urls")
def test_a_file_a_stream_and_a_failing_view_are_answered_alike():
    """Static files and OHIF's bundles are file responses: sent in Django's 64 KiB messages,
    not FileResponse's 4 KiB blocks. A stream and a view's failure answer the same, and each
    request ends with ``request_finished`` (which gives its database connection back)."""
    from tests.dicomweb.handler_urls import SERVED_FILE

    finished: list[object] = []

    def count(sender: object, **kwargs: Any) -> None:
        finished.append(sender)

    request_finished.connect(count)
    try:
        for path, status in (("/file/", 200), ("/stream/", 200), ("/fails/", 500)):
            sent: dict[str, list[int]] = {"one hop": [], "django": []}
            one_hop = _get(SERVED, path, {}, messages=sent["one hop"])
            django = _get(DJANGO, path, {}, messages=sent["django"])
            assert one_hop[0] == status, (path, one_hop[2][:300])
            assert one_hop[1].pop("x-request-id") and django[1].pop("x-request-id")
            assert one_hop == django, path
            assert sent["one hop"] == sent["django"], path
            if path == "/file/":
                assert one_hop[2] == SERVED_FILE.read_bytes()
                assert max(sent["one hop"]) == 2**16
    finally:
        request_finished.disconnect(count)
    assert len(finished) == 6


def test_the_answer_goes_out_when_a_request_finished_receiver_fails(operator_a, caplog):
    """The one hop closes a response before sending it (Django's handler after): a receiver of
    ``request_finished`` that fails (closing a broken database connection) must not turn a
    STOW-RS whose files are committed into a 500. It is logged."""

    def broken(sender: object, **kwargs: Any) -> None:
        raise RuntimeError("the connection broke at close")

    request_finished.connect(broken)
    try:
        stored = _post(SERVED, _body(to_bytes(mr_dataset(42))), token=operator_a.token)
    finally:
        request_finished.disconnect(broken)
    assert stored[0] == 200, stored[2][:300]
    assert json.loads(stored[2])["00081199"]["Value"]  # ReferencedSOPSequence: it was stored
    assert Instance.objects.count() == 1
    assert "closing a finished response failed" in caplog.text
