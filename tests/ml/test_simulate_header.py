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


def _enhanced(frames: int = 3):
    """An Enhanced MR image whose values sit only in its functional groups, some per frame."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from tests.deid.builders import enhanced_mr_dataset

    ds = enhanced_mr_dataset(frames=frames)
    for keyword in ("PixelBandwidth", "InversionTime", "RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            delattr(ds, keyword)
    modifier = Dataset()
    modifier.PixelBandwidth = 240.0
    ds.SharedFunctionalGroupsSequence[0].MRImagingModifierSequence = Sequence([modifier])
    for index, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        inversion = Dataset()
        inversion.InversionTimes = [2500.0 + index, 99.0]
        frame.MRModifierSequence = Sequence([inversion])
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = 1.0 + index, -float(index)
        transform.RescaleType = "US"
        frame.PixelValueTransformationSequence = Sequence([transform])
    ds.PerFrameFunctionalGroupsSequence[2].MREchoSequence[0].EffectiveEchoTime = 120.0
    return ds


def test_an_enhanced_mr_frame_reads_its_own_groups_then_the_shared_ones():
    from ml.header import frame_count, frame_values

    ds = _enhanced()
    assert frame_count(ds) == 3
    first, last = frame_values(ds, 0), frame_values(ds, 2)
    # The frame's own groups: echo, inversion (the first of its times), rescale, position.
    assert (first["EchoTime"], last["EchoTime"]) == (90.0, 120.0)
    assert (first["InversionTime"], last["InversionTime"]) == (2500.0, 2502.0)
    assert (last["RescaleSlope"], last["RescaleIntercept"]) == (3.0, -2.0)
    assert [float(v) for v in last["ImagePositionPatient"]] == [0.0, 0.0, 10.0]
    # The shared groups: timing, pixel measures, phase-encode, bandwidth; the top level: B0.
    assert (first["RepetitionTime"], first["FlipAngle"]) == (4000.0, 150.0)
    assert [float(v) for v in first["PixelSpacing"]] == [0.5, 0.5]
    assert first["SliceThickness"] == 5.0 and first["InPlanePhaseEncodingDirection"] == "COL"
    assert first["PixelBandwidth"] == 240.0 and first["MagneticFieldStrength"] == 3.0
    header = AcquisitionHeader.from_dataset(ds, frame=2)
    assert header == AcquisitionHeader(
        rows=16, columns=16, phase_encode="COL", pixel_bandwidth_hz=240.0, field_strength_t=3.0,
        pixel_spacing_mm=(0.5, 0.5), te_ms=120.0, tr_ms=4000.0, ti_ms=2502.0,
    )  # fmt: skip
    # Where one value is in several places: the frame's own, then the shared, then the top.
    from pydicom.sequence import Sequence

    ds.EchoTime, ds.PixelBandwidth, ds.RepetitionTime = 11.0, 99.0, 999.0
    echo = Dataset()
    echo.EffectiveEchoTime = 55.0
    ds.SharedFunctionalGroupsSequence[0].MREchoSequence = Sequence([echo])
    del ds.PerFrameFunctionalGroupsSequence[1].MREchoSequence
    assert [frame_values(ds, f)["EchoTime"] for f in (0, 1, 2)] == [90.0, 55.0, 120.0]
    assert frame_values(ds, 0)["PixelBandwidth"] == 240.0  # shared, not the top level's 99
    assert frame_values(ds, 0)["RepetitionTime"] == 4000.0
    del ds.SharedFunctionalGroupsSequence[0].MRImagingModifierSequence
    assert frame_values(ds, 0)["PixelBandwidth"] == 99.0  # nowhere else: the top level


def test_a_classic_image_reads_its_top_level_and_empty_values_are_absent():
    from ml.header import frame_count, frame_values

    ds = Dataset()
    ds.Rows, ds.Columns = 8, 8
    ds.EchoTime = [12.0, 80.0]  # a dual echo written into one image: the first
    ds.InPlanePhaseEncodingDirection = ""
    values = frame_values(ds)
    assert values["EchoTime"] == 12.0 and values["InPlanePhaseEncodingDirection"] is None
    assert values["RepetitionTime"] is None and frame_count(ds) == 1
