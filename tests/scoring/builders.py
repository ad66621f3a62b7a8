"""Instances the scoring cannot process, built for real (no mocks)."""

from __future__ import annotations

from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless

from tests.deid.builders import mr_dataset, to_bytes


def undecodable_mr(number: int, rows: int = 64, columns: int = 64) -> bytes:
    """A header-valid MR instance in RLE Lossless whose one fragment is framed correctly (so
    ingest accepts it: compressed pixels are not decoded at the door) but declares one RLE
    segment where 16-bit pixels need two: decoding its pixels raises."""
    ds = mr_dataset(number, rows=rows, columns=columns)
    header = (1).to_bytes(4, "little") + (64).to_bytes(4, "little") + b"\x00" * 56
    ds.PixelData = encapsulate([header + b"\xff\x13" * 20])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return to_bytes(ds, syntax=RLELossless)
