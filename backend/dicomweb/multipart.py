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


def parts(body: bytes, boundary: str) -> Iterator[tuple[dict[str, str], bytes]]:
    """(headers, payload) of each part; headers lower-cased."""
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise MultipartError("no parts in the multipart body")
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            return  # closing delimiter
        chunk = chunk.removeprefix(b"\r\n")
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("a part has no header block")
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        yield headers, payload.removesuffix(b"\r\n")
    raise MultipartError("the multipart body is not closed")


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
