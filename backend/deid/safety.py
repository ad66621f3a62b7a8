"""Refusing hostile DICOM before pydicom parses it, in memory bounded by the file's own size.

pydicom trusts declared lengths (a value claiming 4 GB with 10 bytes present is accepted),
recurses without limit into sequences and inflates deflated data without a ceiling
(security-checklist 0.6). ``prescan`` walks the element stream itself and checks every declared
length against the bytes present and the nesting depth; ``inflate_bounded`` inflates with a
budget.
"""

from __future__ import annotations

import struct
import zlib

MAX_DEPTH = 12
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"SV",
    b"UV",
}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


class UnsafeFile(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def inflate_bounded(raw: bytes, *, limit: int, chunk: int = 1 << 20) -> bytes:
    """Inflate raw-deflate ``raw`` (Deflated Explicit VR LE) to at most ``limit`` bytes, a chunk
    at a time, so a bomb costs about ``limit`` bytes of memory before it is refused.

    Chunks are kept in a list and joined once at the end: growing one buffer would copy it on
    every reallocation and double the peak.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pieces: list[bytes] = []
    total = 0
    pending = memoryview(raw)
    try:
        while not inflater.eof:
            if inflater.unconsumed_tail:
                source = inflater.unconsumed_tail
            elif pending:
                source, pending = bytes(pending[:chunk]), pending[chunk:]
            else:
                break  # input ended before the deflate stream did: pydicom reports the rest
            piece = inflater.decompress(source, chunk)
            total += len(piece)
            if total > limit:
                raise UnsafeFile(f"deflated data inflates past the {limit // 2**20} MiB limit")
            pieces.append(piece)
    except zlib.error:
        raise UnsafeFile("deflated data is corrupt") from None
    return b"".join(pieces)


def prescan(data: bytes, start: int, *, explicit: bool, little: bool) -> None:
    """Walk the data set in ``data[start:]`` and raise ``UnsafeFile`` on a declared length past the
    end of the file, nesting deeper than ``MAX_DEPTH`` or a malformed delimiter."""
    if _walk(memoryview(data), start, len(data), explicit, little, depth=0) != len(data):
        raise UnsafeFile("a stray delimiter in the data set")


def _walk(buf: memoryview, pos: int, end: int, explicit: bool, little: bool, depth: int) -> int:
    """Walk elements from ``pos`` up to ``end`` (or a delimiter); returns the position after."""
    if depth > MAX_DEPTH:
        raise UnsafeFile(f"sequences nested deeper than {MAX_DEPTH} levels")
    fmt = "<" if little else ">"
    while pos < end:
        if pos + 8 > end:
            raise UnsafeFile("truncated element header")
        group, elem = struct.unpack_from(fmt + "HH", buf, pos)
        tag = (group << 16) | elem
        if tag in (_ITEM_END, _SEQ_END):
            return pos  # the caller consumes the delimiter
        if group == 0xFFFE:
            (length,) = struct.unpack_from(fmt + "I", buf, pos + 4)
            vr, header = b"", 8
        elif explicit:
            vr = bytes(buf[pos + 4 : pos + 6])
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    raise UnsafeFile("truncated element header")
                (length,) = struct.unpack_from(fmt + "I", buf, pos + 8)
                header = 12
            elif vr.isalpha() and vr.isupper():
                (length,) = struct.unpack_from(fmt + "H", buf, pos + 6)
                header = 8
            else:
                raise UnsafeFile("malformed value representation")
        else:
            (length,) = struct.unpack_from(fmt + "I", buf, pos + 4)
            vr, header = b"", 8
        pos += header
        if length == _UNDEFINED:
            if tag == 0x7FE00010:
                pos = _walk_fragments(buf, pos, end, fmt)
            elif vr in (b"SQ", b"UN", b"") or tag == _ITEM:
                pos = _walk_sequence(buf, pos, end, explicit, little, depth + 1, tag)
            else:
                raise UnsafeFile("undefined length on a non-sequence element")
            continue
        if pos + length > end:
            raise UnsafeFile("an element declares a length past the end of the file")
        if vr == b"SQ" and length:
            _walk_items(buf, pos, pos + length, explicit, little, depth + 1)
        pos += length
    return pos


def _walk_items(
    buf: memoryview, pos: int, end: int, explicit: bool, little: bool, depth: int
) -> None:
    if depth > MAX_DEPTH:
        raise UnsafeFile(f"sequences nested deeper than {MAX_DEPTH} levels")
    fmt = "<" if little else ">"
    while pos < end:
        if pos + 8 > end:
            raise UnsafeFile("truncated sequence item")
        group, elem, length = struct.unpack_from(fmt + "HHI", buf, pos)
        if (group << 16) | elem != _ITEM:
            raise UnsafeFile("malformed sequence item")
        pos += 8
        if length == _UNDEFINED:
            pos = _walk(buf, pos, end, explicit, little, depth)
            pos = _expect(buf, pos, end, fmt, _ITEM_END)
        else:
            if pos + length > end:
                raise UnsafeFile("a sequence item declares a length past its end")
            _walk(buf, pos, pos + length, explicit, little, depth)
            pos += length


def _walk_sequence(
    buf: memoryview, pos: int, end: int, explicit: bool, little: bool, depth: int, tag: int
) -> int:
    """An undefined-length sequence: items until the sequence delimiter."""
    if depth > MAX_DEPTH:
        raise UnsafeFile(f"sequences nested deeper than {MAX_DEPTH} levels")
    fmt = "<" if little else ">"
    while True:
        if pos + 8 > end:
            raise UnsafeFile("a sequence is not terminated")
        group, elem, length = struct.unpack_from(fmt + "HHI", buf, pos)
        item_tag = (group << 16) | elem
        if item_tag == _SEQ_END:
            return pos + 8
        if item_tag != _ITEM:
            raise UnsafeFile("malformed sequence item")
        pos += 8
        if length == _UNDEFINED:
            pos = _walk(buf, pos, end, explicit, little, depth)
            pos = _expect(buf, pos, end, fmt, _ITEM_END)
        else:
            if pos + length > end:
                raise UnsafeFile("a sequence item declares a length past the end of the file")
            _walk(buf, pos, pos + length, explicit, little, depth)
            pos += length


def _walk_fragments(buf: memoryview, pos: int, end: int, fmt: str) -> int:
    """Encapsulated pixel data: items of defined length until the sequence delimiter."""
    while True:
        if pos + 8 > end:
            raise UnsafeFile("encapsulated pixel data is truncated")
        group, elem, length = struct.unpack_from(fmt + "HHI", buf, pos)
        tag = (group << 16) | elem
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM or length == _UNDEFINED or pos + length > end:
            raise UnsafeFile("encapsulated pixel data is malformed or truncated")
        pos += length


def _expect(buf: memoryview, pos: int, end: int, fmt: str, delimiter: int) -> int:
    if pos + 8 > end:
        raise UnsafeFile("an item is not terminated")
    group, elem = struct.unpack_from(fmt + "HH", buf, pos)
    if (group << 16) | elem != delimiter:
        raise UnsafeFile("malformed item delimiter")
    return pos + 8
