"""Every row of PS3.15 Table E.1-1 that a data element of a simple VR can carry is planted in one
MR file, at the top level and one sequence deep, and comes out as its action code says."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset

from backend.deid.profile import deidentify_bytes
from backend.deid.table_e11 import TABLE
from tests.deid.builders import mr_dataset, to_bytes

KEY = b"k" * 32
NAME = "ZQXCANARYFAMILY"  # the planted patient's surname: what Clean Descriptors must cut out
VALUES = {
    "PN": f"{NAME}^ROW",
    "LO": f"{NAME} LO",
    "SH": f"{NAME} SH",
    "LT": f"{NAME} LT",
    "ST": f"{NAME} ST",
    "UT": f"{NAME} UT",
    "UC": f"{NAME} UC",
    "CS": "CANARYCS",
    "AE": "CANARYAE",
    "AS": "045Y",
    "UR": "http://canary.invalid/x",
    "DA": "20240315",
    "DT": "20240315101500",
    "TM": "101500",
    "IS": "12345",
    "DS": "1.5",
}
SKIPPED_GROUPS = (0x0000, 0x0002, 0xFFFA, 0xFFFC)  # command, file meta, signatures, padding
ROWS = sorted(
    (tag, row)
    for tag, row in TABLE.items()
    if dictionary_VR(tag) in (*VALUES, "UI") and tag >> 16 not in SKIPPED_GROUPS
)


def _planted() -> Dataset:
    ds = mr_dataset()
    item = ds.ReferencedImageSequence[0]  # X/Z/U*: kept, so its contents are checked too
    for index, (tag, _) in enumerate(ROWS):
        vr = dictionary_VR(tag)
        value = f"1.2.826.0.1.3680043.8.498.9{index:04d}" if vr == "UI" else VALUES[vr]
        if tag not in ds:
            ds.add_new(tag, vr, value)
        if tag not in item:
            item.add_new(tag, vr, value)
    return ds


@pytest.fixture(scope="module")
def result() -> tuple[Dataset, Dataset]:
    original = _planted()
    _, ds = deidentify_bytes(to_bytes(_planted()), key=KEY)
    return original, ds


def test_the_table_covers_the_attributes_an_mr_image_carries():
    assert len(TABLE) > 600
    assert len(ROWS) > 400


@pytest.mark.parametrize("depth", [0, 1])
def test_every_row_is_carried_out_as_its_action_code_says(result, depth):
    original, ds = result
    if depth:
        original, ds = original.ReferencedImageSequence[0], ds.ReferencedImageSequence[0]
    wrong = []
    for tag, row in ROWS:
        keyword, vr = keyword_for_tag(tag) or hex(tag), dictionary_VR(tag)
        before = original[tag].value
        after = ds[tag].value if tag in ds else None
        if keyword in ("PatientName", "PatientID") and depth == 0:
            expected_ok = str(after).startswith("ANON-")
        elif row.modified_dates:
            if vr in ("DA", "DT"):
                expected_ok = bool(after) and after != before and len(after) == len(before)
            elif vr == "TM":
                expected_ok = after == before
            else:
                expected_ok = tag not in ds
        elif row.clean_descriptors:
            expected_ok = tag not in ds or NAME not in str(after).upper()
        elif row.basic == "U":
            expected_ok = bool(after) and after != before and pydicom.uid.UID(after).is_valid
        elif row.basic in ("Z", "Z/D"):
            expected_ok = tag in ds and after in (None, "", [])
        elif row.basic == "D":
            expected_ok = tag not in ds if vr in ("AE", "AS", "UR") else (
                tag in ds and after != before and bool(after))  # fmt: skip
        else:  # X, X/Z, X/D, X/Z/D
            expected_ok = tag not in ds
        if not expected_ok:
            wrong.append(f"{keyword} {row.basic}: {after!r}")
    assert wrong == []
