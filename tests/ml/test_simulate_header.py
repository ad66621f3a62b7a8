"""AcquisitionHeader reads the acquisition from a DICOM header and names the encoding axes."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from ml.simulate import AcquisitionHeader


def test_it_reads_the_acquisition_values_of_a_dataset():
    ds = Dataset()
    ds.Rows, ds.Columns = 384, 512
    ds.InPlanePhaseEncodingDirection = "COL"
    ds.PixelBandwidth = 130.0
    ds.MagneticFieldStrength = 1.5
    ds.PixelSpacing = [0.5, 0.45]
    ds.EchoTime, ds.RepetitionTime, ds.InversionTime = 90.0, 9000.0, 2500.0
    header = AcquisitionHeader.from_dataset(ds)
    assert header == AcquisitionHeader(
        rows=384, columns=512, phase_encode="COL", pixel_bandwidth_hz=130.0,
        field_strength_t=1.5, pixel_spacing_mm=(0.5, 0.45), te_ms=90.0, tr_ms=9000.0,
        ti_ms=2500.0,
    )  # fmt: skip
    assert header.phase_axis == 0 and header.frequency_axis == 1


def test_missing_optional_values_get_defaults_and_row_means_phase_along_axis_1():
    ds = Dataset()
    ds.Rows, ds.Columns = 64, 64
    header = AcquisitionHeader.from_dataset(ds)
    assert header.phase_encode == "ROW" and header.phase_axis == 1 and header.frequency_axis == 0
    assert header.ti_ms is None and header.pixel_bandwidth_hz == 200.0


def test_it_rejects_an_unknown_phase_direction_and_non_positive_values():
    with pytest.raises(ValueError, match="phase_encode"):
        AcquisitionHeader(rows=8, columns=8, phase_encode="DIAG")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bandwidth"):
        AcquisitionHeader(rows=8, columns=8, pixel_bandwidth_hz=0.0)
