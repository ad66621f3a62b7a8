"""The de-identified file is still a valid MR object (security checklist D-13): dicom3tools'
``dciodvfy`` finds no error in it that the original did not have, pydicom re-reads it with
validation set to raise, and it says what was done to it (PatientIdentityRemoved, the CID 7050
codes of the options applied, the modified dates)."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config
from pydicom.data import get_testdata_file

from backend.deid.profile import METHOD_CODES, deidentify_file
from backend.ingest.demo_series import DEMO_SERIES, demo_series_files
from tests.deid.builders import (
    as_acquired,
    enhanced_mr_dataset,
    mr_dataset,
    to_bytes,
    with_more_phi,
)

KEY = b"conformance-test-key-0123456789ab"


@functools.cache
def _inputs() -> dict[str, bytes]:
    return {
        "canaries everywhere": to_bytes(with_more_phi(mr_dataset(1, rows=64, columns=48))),
        "pydicom MR_small": as_acquired(Path(get_testdata_file("MR_small.dcm")).read_bytes()),
        "enhanced MR": to_bytes(enhanced_mr_dataset(frames=3)),
        "demo series slice": demo_series_files(DEMO_SERIES[0])[0],
    }


def _findings(data: bytes, tmp_path: Path, kind: str) -> set[str]:
    """dciodvfy's messages of ``kind`` (Error, Warning) about a file, the values they quote left
    out (the same problem with another value — a UID, a pseudonym — is the same problem); the
    element and module names stay, so a Type 2 attribute the profile dropped is a new error."""
    path = tmp_path / "file.dcm"
    path.write_bytes(data)
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return {re.sub(r" = <[^>]*>", " = <>", line) for line in lines if line.startswith(kind)}


@pytest.mark.parametrize("name", sorted(_inputs()))
def test_a_de_identified_file_is_no_less_valid_than_the_original(name, tmp_path):
    original = _inputs()[name]
    clean = deidentify_file(original, key=KEY).data
    new_errors = _findings(clean, tmp_path, "Error") - _findings(original, tmp_path, "Error")
    assert not new_errors, new_errors

    with config.strict_reading():  # reading_validation_mode = RAISE
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(clean))
        for element in ds.iterall():
            element.value  # noqa: B018 - every value read and validated
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [(c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning)
             for c in ds.DeidentificationMethodCodeSequence]  # fmt: skip
    assert codes == [(value, "DCM", meaning) for value, meaning in METHOD_CODES]
    assert len(ds.DeidentificationMethod) <= 64  # LO
    assert ds.preamble == bytes(128)


def test_the_model_scores_a_de_identified_series_exactly_as_the_original():
    """Utility kept (security checklist D-14): everything the model reads — pixels, the pixel
    description, the acquisition header — passes the profile unchanged, so the shipped pruned
    model's masks and indices on the de-identified copy of a demo series (one with motion) are
    those of the original, bit for bit."""
    from ml.pipeline import SHIPPED, get_pipeline

    motion = next(spec for spec in DEMO_SERIES if spec.artifact == "motion")
    originals = demo_series_files(motion)[:6]
    read = [pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)) for data in originals]
    cleaned = [
        pydicom.dcmread(pydicom.filebase.DicomBytesIO(deidentify_file(data, key=KEY).data))
        for data in originals
    ]
    assert all(a.PixelData == b.PixelData for a, b in zip(read, cleaned, strict=True))
    pipeline = get_pipeline(SHIPPED["pruned-onnx"])
    before, after = pipeline.score_datasets(read), pipeline.score_datasets(cleaned)
    assert np.array_equal(before.masks, after.masks)
    assert np.array_equal(before.suitability, after.suitability)
    assert before.masks.any(), "the motion series shows its artifact"
