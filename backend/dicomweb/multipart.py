"""multipart/related bodies, both ways (RFC 2387, as DICOMweb uses them)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_TYPE = re.compile(r'type="?([^";]+)"?', re.IGNORECASE)


class MultipartError(ValueError):
    pass


def boundary_of(content_type: str) -> str:
    match = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/related") or not match:
        raise MultipartError("expected Content-Type multipart/related with a boundary")
    return match.group(1)


def root_type_of(content_type: str) -> str:
    match = _TYPE.search(content_type)
    return match.group(1).lower() if match else ""


def parts(body: bytes, boundary: str) -> Iterator[tuple[dict[str, str], memoryview]]:
    """(headers, payload) of each part; headers lower-cased.

    Each payload is a view into ``body``, not a copy (a STOW-RS of fifty slices is 20 MB; the
    door copies one part at a time, as it de-identifies it)."""
    delimiter = b"--" + boundary.encode()
    view = memoryview(body)
    start = body.find(delimiter)
    if start < 0:
        raise MultipartError("no parts in the multipart body")
    first = True
    while True:
        start += len(delimiter)
        end = body.find(delimiter, start)  # each byte of the body is searched once
        if first and end < 0:
            raise MultipartError("no parts in the multipart body")
        first = False
        stop = end if end >= 0 else len(body)
        if body.startswith(b"--", start, stop):
            return  # closing delimiter
        if body.startswith(b"\r\n", start, stop):
            start += 2
        headers: dict[str, str] = {}
        if body.startswith(b"\r\n", start, stop):
            payload_start = start + 2  # no header lines (RFC 2046: the part is text/plain)
        else:
            separator = body.find(b"\r\n\r\n", start, stop)
            if separator < 0:
                raise MultipartError("a part has no header block")
            for line in body[start:separator].split(b"\r\n"):
                name, _, value = line.decode("latin-1").partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            payload_start = separator + 4
        payload_end = (
            stop - 2 if body.startswith(b"\r\n", max(stop - 2, payload_start), stop) else stop
        )
        yield headers, view[payload_start:payload_end]
        if end < 0:
            raise MultipartError("the multipart body is not closed")
        start = end


def encode_stream(payloads: Iterable[bytes], content_type: str) -> tuple[Iterator[bytes], str]:
    """:func:`encode` as pieces, a payload at a time (``payloads`` is consumed lazily): for a
    body too large to hold whole."""
    boundary = secrets.token_hex(16)

    def pieces() -> Iterator[bytes]:
        for payload in payloads:
            yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
            yield payload
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return pieces(), f'multipart/related; type="{content_type}"; boundary={boundary}'


def encode(payloads: Iterable[bytes], content_type: str) -> tuple[bytes, str]:
    """A multipart/related body of ``payloads``; returns (body, Content-Type header)."""
    boundary = secrets.token_hex(16)
    out = bytearray()
    for payload in payloads:
        out += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
        out += payload + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    header = f'multipart/related; type="{content_type}"; boundary={boundary}'
    return bytes(out), header
