"""Refusing hostile DICOM before pydicom parses it, in memory bounded by the file's own size.

pydicom trusts declared lengths (a value claiming 4 GB with 10 bytes present is accepted),
recurses without limit into sequences and inflates deflated data without a ceiling
(security-checklist 0.6). ``prescan`` walks the element stream itself and checks every declared
length against the bytes present and the nesting depth; ``inflate_bounded`` inflates with a
budget. It also counts elements: each one becomes a Python object of a few hundred bytes, so a
file of millions of tiny elements would cost gigabytes however small its declared lengths.
"""

from __future__ import annotations

import struct
import zlib

MAX_DEPTH = 12
# An Enhanced MR of 4096 frames carries ~40 elements per frame in its functional groups.
MAX_ELEMENTS = 400_000
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
    end of the file, nesting deeper than ``MAX_DEPTH``, more than ``MAX_ELEMENTS`` elements or a
    malformed delimiter. Iterative over elements, recursive only over nesting (at most
    ``MAX_DEPTH`` frames)."""
    walker = _Walker(memoryview(data), explicit=explicit, little=little)
    if walker.elements_until(start, len(data), depth=0) != len(data):
        raise UnsafeFile("a stray delimiter in the data set")


class _Walker:
    def __init__(self, buf: memoryview, *, explicit: bool, little: bool) -> None:
        self.buf, self.explicit = buf, explicit
        self.fmt = "<" if little else ">"
        self.count = 0

    def _header(self, pos: int, end: int) -> tuple[int, int]:
        """The tag and length of an item or delimiter at ``pos``."""
        if pos + 8 > end:
            raise UnsafeFile("a sequence is not terminated")
        group, elem, length = struct.unpack_from(self.fmt + "HHI", self.buf, pos)
        return (group << 16) | elem, length

    def elements_until(self, pos: int, end: int, depth: int) -> int:
        """Walk elements from ``pos`` up to ``end`` or a delimiter; the position after them."""
        if depth > MAX_DEPTH:
            raise UnsafeFile(f"sequences nested deeper than {MAX_DEPTH} levels")
        buf, fmt = self.buf, self.fmt
        while pos < end:
            if pos + 8 > end:
                raise UnsafeFile("truncated element header")
            self.count += 1
            if self.count > MAX_ELEMENTS:
                raise UnsafeFile(f"more than {MAX_ELEMENTS} data elements")
            group, elem = struct.unpack_from(fmt + "HH", buf, pos)
            tag = (group << 16) | elem
            if tag in (_ITEM_END, _SEQ_END):
                return pos  # the caller consumes the delimiter
            if group == 0xFFFE or not self.explicit:
                (length,) = struct.unpack_from(fmt + "I", buf, pos + 4)
                vr, header = b"", 8
            else:
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
            pos += header
            if length == _UNDEFINED:
                if tag == 0x7FE00010:
                    pos = self.fragments(pos, end)
                elif vr in (b"SQ", b"UN", b"") or tag == _ITEM:
                    pos = self.items(pos, end, depth + 1, delimited=True)
                else:
                    raise UnsafeFile("undefined length on a non-sequence element")
                continue
            if pos + length > end:
                raise UnsafeFile("an element declares a length past the end of the file")
            if vr == b"SQ" and length:
                if self.items(pos, pos + length, depth + 1, delimited=False) != pos + length:
                    raise UnsafeFile("malformed sequence item")
            pos += length
        return pos

    def items(self, pos: int, end: int, depth: int, *, delimited: bool) -> int:
        """Items of a sequence: until its delimiter (undefined length) or ``end`` (defined)."""
        if depth > MAX_DEPTH:
            raise UnsafeFile(f"sequences nested deeper than {MAX_DEPTH} levels")
        while delimited or pos < end:
            tag, length = self._header(pos, end)
            if delimited and tag == _SEQ_END:
                return pos + 8
            if tag != _ITEM:
                raise UnsafeFile("malformed sequence item")
            pos += 8
            self.count += 1
            if length == _UNDEFINED:
                pos = self.elements_until(pos, end, depth)
                tag, _ = self._header(pos, end)
                if tag != _ITEM_END:
                    raise UnsafeFile("malformed item delimiter")
                pos += 8
            else:
                if pos + length > end:
                    raise UnsafeFile("a sequence item declares a length past the end of the file")
                if self.elements_until(pos, pos + length, depth) != pos + length:
                    raise UnsafeFile("a stray delimiter in a sequence item")
                pos += length
        return pos

    def fragments(self, pos: int, end: int) -> int:
        """Encapsulated pixel data: items of defined length until the sequence delimiter."""
        while True:
            if pos + 8 > end:
                raise UnsafeFile("encapsulated pixel data is truncated")
            tag, length = self._header(pos, end)
            pos += 8
            if tag == _SEQ_END:
                return pos
            if tag != _ITEM or length == _UNDEFINED or pos + length > end:
                raise UnsafeFile("encapsulated pixel data is malformed or truncated")
            self.count += 1
            if self.count > MAX_ELEMENTS:
                raise UnsafeFile(f"more than {MAX_ELEMENTS} data elements")
            pos += length
