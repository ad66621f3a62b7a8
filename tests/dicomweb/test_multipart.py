"""multipart/related bodies are read in one pass: each part's headers and payload (a view into
the body), a clear error for a body without parts or without its closing delimiter."""

from __future__ import annotations

import pytest

from backend.dicomweb import multipart


def _parts(body: bytes) -> list[tuple[dict[str, str], bytes]]:
    return [(headers, bytes(payload)) for headers, payload in multipart.parts(body, "xyz")]


def test_every_part_with_its_headers_and_payload():
    body, content_type = multipart.encode([b"one\r\n--xy", b"", b"three"], "application/dicom")
    boundary = multipart.boundary_of(content_type)
    found = [(h, bytes(p)) for h, p in multipart.parts(body, boundary)]
    assert found == [
        ({"content-type": "application/dicom"}, b"one\r\n--xy"),
        ({"content-type": "application/dicom"}, b""),
        ({"content-type": "application/dicom"}, b"three"),
    ]
    # A part without header lines, and a preamble before the first delimiter.
    assert _parts(b"preamble\r\n--xyz\r\n\r\nbare\r\n--xyz--\r\n") == [({}, b"bare")]


@pytest.mark.parametrize(
    "body",
    [b"", b"no delimiter at all", b"--xyz\r\nContent-Type: a/b\r\n\r\nnever closed"],
    ids=["empty", "no-delimiter", "one-delimiter"],
)
def test_a_body_without_parts_is_refused_before_any_part(body):
    with pytest.raises(multipart.MultipartError, match="no parts"):
        next(multipart.parts(body, "xyz"))


def test_a_body_that_is_not_closed_gives_its_parts_then_an_error():
    reading = multipart.parts(b"--xyz\r\n\r\nfirst\r\n--xyz\r\n\r\nsecond", "xyz")
    assert bytes(next(reading)[1]) == b"first"
    assert bytes(next(reading)[1]) == b"second"  # a STOW-RS reads them all before it stores any
    with pytest.raises(multipart.MultipartError, match="not closed"):
        next(reading)


def test_a_part_without_its_header_block_is_refused():
    with pytest.raises(multipart.MultipartError, match="header block"):
        _parts(b"--xyz\r\nContent-Type: a/b\r\n--xyz--\r\n")
