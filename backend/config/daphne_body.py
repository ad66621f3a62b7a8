"""Request bodies in memory under daphne, up to the request limit, handed over in one piece.

Daphne's requests are Twisted's, and Twisted writes every body of 100 kB or more to an anonymous
temporary file before the application sees it: each STOW-RS and each upload chunk — original
DICOM files, the patient's name in them — would sit on disk, unencrypted, before the door
de-identifies it (MISSION: nothing with a patient identifier is written before that). Daphne then
reads that file back in 8 KiB pieces, each one a message through the event loop's queue (2,500
of them for a STOW-RS of fifty 384×512 slices).

:func:`install` (done by ``backend.config.asgi`` when daphne serves it) makes each request keep
its body in memory, up to ``limit`` bytes (``ARTISCAN_MAX_REQUEST_MB``, Django's own limit for a
request body); a body declared or found longer is not kept at all (what arrives is dropped, so
memory stays bounded however much a client sends) and is answered 413 once it has arrived. A
kept body reaches the application as one ``http.request`` message.
"""

from __future__ import annotations

import io
from typing import Any

_INSTALLED = "_artiscan_body_in_memory"


class Body:
    """A request body kept in memory until it passes ``limit`` bytes; from then on nothing.

    The file-like object Twisted writes the body into and daphne reads it from. The pieces are
    written into one buffer (``io.BytesIO``), made at the declared length (Content-Length) at
    once when there is one, and the first read of the whole body returns that buffer itself
    (``getvalue`` of an exact-size buffer is no copy). So a body is held once: kept as pieces
    and joined at the first read, it was held twice at that moment — with several 50-slice
    STOW-RS requests at once, tens of MB of a web process' peak.
    """

    def __init__(self, limit: int, declared: int | None = None) -> None:
        self.limit = limit
        self.too_large = False
        self.closed = False
        self._buffer = io.BytesIO()
        self._size = 0
        self._pos = 0
        if declared is not None and 0 < declared <= limit:
            # The declared length at once: one allocation of the right size (a large one, which
            # glibc maps on its own and gives back whole when the body goes), no reallocation
            # as the pieces arrive.
            self._buffer.seek(declared - 1)
            self._buffer.write(b"\0")
            self._buffer.seek(0)

    def write(self, data: Any) -> int:
        size = len(data)
        if self.too_large or self.closed:
            return size
        if self._size + size > self.limit:
            self.too_large = True
            self._buffer, self._size, self._pos = io.BytesIO(), 0, 0
            return size
        self._buffer.write(data)
        self._size += size
        return size

    def _whole(self) -> bytes:
        # The buffer itself, cut to its length (no copy while nothing else holds it).
        self._buffer.truncate(self._size)
        return self._buffer.getvalue()

    def read(self, size: int | None = -1) -> bytes:
        data = self._whole()
        end = len(data) if size is None or size < 0 else min(len(data), self._pos + size)
        start, self._pos = self._pos, end
        return data if start == 0 and end == len(data) else data[start:end]

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self.closed = True
        self._buffer, self._size, self._pos = io.BytesIO(), 0, 0


def _release(result: Any, body: Body) -> Any:
    body.close()
    return result


def install(limit: int) -> None:
    """Make daphne's requests keep their bodies as :class:`Body` (idempotent)."""
    from daphne.http_protocol import WebRequest

    if getattr(WebRequest, _INSTALLED, None) == limit:
        return
    original = getattr(WebRequest, "_artiscan_original_process", None) or WebRequest.process

    def gotLength(self: Any, length: int | None) -> None:  # Twisted names it so
        self.content = Body(limit, declared=length)
        if length is not None and length > limit:
            self.content.too_large = True

    def process(self: Any) -> Any:
        content = self.content
        if isinstance(content, Body) and content.too_large:
            megabytes = limit / (1024 * 1024)
            self.basic_error(
                413, b"Payload Too Large", f"The request body is over {megabytes:g} MB."
            )
            return None
        # The whole body in one ``http.request`` message (daphne reads the body in pieces of
        # this size; the body is already in memory, so a piece as large as it costs nothing).
        if self.server.request_buffer_size <= limit:
            self.server.request_buffer_size = limit + 1
        done = original(self)
        if isinstance(content, Body):
            # By the time daphne's process() completes the body is in its message; the request
            # object lives on (reference cycles with its channel) until a garbage collection,
            # which bytes never trigger: without this, finished requests' bodies piled up.
            done.addBoth(_release, content)
        return done

    WebRequest._artiscan_original_process = original
    WebRequest.gotLength = gotLength
    WebRequest.process = process
    setattr(WebRequest, _INSTALLED, limit)
