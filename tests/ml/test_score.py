"""``python -m ml score`` and the pipeline with a real (tiny, untrained) Keras model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from ml import ARTIFACT_TYPES
from tests.gpu_ops.phantoms import head_phantom

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    from ml.model import network

    model = network.build_model(network.default_widths(base=4, depth=2), depth=2)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path


def _new_file(sop_class: str) -> Dataset:
    """A dataset with its file meta and a new SOPInstanceUID, of ``sop_class``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    return ds


def _score_command(series: Path, out: Path, model: Path) -> subprocess.CompletedProcess[str]:
    """``python -m ml score SERIES --out OUT --model MODEL`` in a process of its own."""
    command = [sys.executable, "-m", "ml", "score", str(series), "--out", str(out)]
    return subprocess.run(
        [*command, "--model", str(model)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def write_series(folder: Path, slices: int = 3, rows: int = 64, cols: int = 48, pe: str = "COL"):
    folder.mkdir(parents=True, exist_ok=True)
    image, _ = head_phantom(max(rows, cols))
    image = image[:rows, :cols]
    study, series = generate_uid(), generate_uid()
    uids = []
    for index in range(slices):
        ds = _new_file(MRImageStorage)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality = "MR"
        ds.InstanceNumber = index + 1
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [0.9, 0.9]
        ds.PixelBandwidth = 130.0
        ds.MagneticFieldStrength = 1.5
        ds.InPlanePhaseEncodingDirection = pe
        ds.EchoTime, ds.RepetitionTime = 15.0, 600.0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.RescaleSlope, ds.RescaleIntercept = 2.0, 0.0
        ds.PixelData = np.rint(image * (1000 + 100 * index)).astype(np.uint16).tobytes()
        ds.save_as(folder / f"{slices - index:03d}.dcm", enforce_file_format=True)
        uids.append(ds.SOPInstanceUID)
    return uids


def test_the_score_command_writes_exactly_the_mission_keys(tmp_path, tiny_model_path):
    uids = write_series(tmp_path / "series", slices=3, rows=64, cols=48)
    out = tmp_path / "out" / "scores.npz"
    result = _score_command(tmp_path / "series", out, tiny_model_path)
    assert result.returncode == 0, result.stderr[-2000:]
    with np.load(out) as z:
        assert sorted(z.files) == sorted(
            ["sop_instance_uid", "classes", "masks", "suitability", "series_suitability"]
        )
        assert z["sop_instance_uid"].tolist() == uids  # InstanceNumber order
        assert z["classes"].tolist() == list(ARTIFACT_TYPES)
        assert z["masks"].dtype == np.uint8 and z["masks"].shape == (3, 10, 64, 48)
        assert set(np.unique(z["masks"])) <= {0, 1}
        assert z["suitability"].dtype == np.float32 and z["suitability"].shape == (3,)
        assert z["series_suitability"].dtype == np.float32 and z["series_suitability"].shape == ()
        assert 0 <= float(z["series_suitability"]) <= 1


def _frames(count: int = 3, rows: int = 64, cols: int = 48):
    """Stored values, rescale slopes and echo times of ``count`` slices of a phantom."""
    image, _ = head_phantom(max(rows, cols))
    # Each its own picture (the phantom shifted), not only its own scale: normalisation takes a
    # slice's scale away, so only different content shows a frame put in the wrong place.
    stored = [
        np.rint(np.roll(image[:rows, :cols], 6 * i, axis=1) * (900 + 150 * i)).astype(np.uint16)
        for i in range(count)
    ]
    return stored, [1.0 + 0.5 * i for i in range(count)], [15.0 + 30 * i for i in range(count)]


def write_enhanced(path: Path, stored, slopes, echoes) -> str:
    """The slices of :func:`_frames` as one Enhanced MR file: every acquisition value in its
    functional groups (slope and echo time per frame), none at the top level but B0."""
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedMRImageStorage

    def item(**values) -> Dataset:
        ds = Dataset()
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        return ds

    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _new_file(EnhancedMRImageStorage)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.InstanceNumber, ds.MagneticFieldStrength = "MR", 1, 1.5
    ds.NumberOfFrames = len(stored)
    ds.Rows, ds.Columns = stored[0].shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SharedFunctionalGroupsSequence = Sequence([item(
        PixelMeasuresSequence=Sequence([item(PixelSpacing=[0.9, 0.9], SliceThickness=5.0)]),
        MRFOVGeometrySequence=Sequence([item(InPlanePhaseEncodingDirection="COL")]),
        MRTimingAndRelatedParametersSequence=Sequence([item(RepetitionTime=600.0)]),
        MRImagingModifierSequence=Sequence([item(PixelBandwidth=130.0)]),
    )])  # fmt: skip
    ds.PerFrameFunctionalGroupsSequence = Sequence([
        item(
            MREchoSequence=Sequence([item(EffectiveEchoTime=echo)]),
            PixelValueTransformationSequence=Sequence(
                [item(RescaleSlope=slope, RescaleIntercept=0.0, RescaleType="US")]
            ),
        )
        for slope, echo in zip(slopes, echoes, strict=True)
    ])  # fmt: skip
    ds.PixelData = np.stack(stored).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def test_an_enhanced_mr_file_is_scored_frame_by_frame_as_its_classic_slices_are(
    tmp_path, tiny_model_path
):
    """One slice per frame, in frame order, under the file's UID; each frame with its own
    rescale and echo time and the shared values: exactly what the same slices score as classic
    single-frame files with those values at their top level."""
    from ml.pipeline import ScoringPipeline

    stored, slopes, echoes = _frames()
    uid = write_enhanced(tmp_path / "enhanced" / "IM0001", stored, slopes, echoes)
    write_series(tmp_path / "classic", slices=3, rows=64, cols=48, pe="COL")
    classic = sorted((tmp_path / "classic").iterdir(), key=lambda p: -int(p.stem))
    for index, path in enumerate(classic):  # write_series numbers its files backwards
        ds = pydicom.dcmread(path)
        ds.BitsStored, ds.HighBit = 16, 15
        ds.PixelData = stored[index].tobytes()
        ds.RescaleSlope, ds.EchoTime, ds.SliceThickness = slopes[index], echoes[index], 5.0
        ds.save_as(path, enforce_file_format=True)
    pipeline = ScoringPipeline.load(tiny_model_path)
    raw = pipeline.infer(np.zeros((1, 64, 48), np.float32), np.zeros((1, 8), np.float32))
    pipeline.thresholds[:] = float(np.median(raw["masks"]))  # masks that are not all 0 or 1
    expected = pipeline.score_series_dir(tmp_path / "classic")
    got = pipeline.score_series_dir(tmp_path / "enhanced")
    assert got.sop_instance_uid == [uid] * 3
    assert 0 < expected.masks.mean() < 1
    np.testing.assert_array_equal(got.masks, expected.masks)
    np.testing.assert_allclose(got.suitability, expected.suitability, atol=1e-6)
    np.testing.assert_allclose(got.presence, expected.presence, atol=1e-6)
    # Each frame went in with its own echo time (an untrained network's FiLM ignores the
    # header, so the figures above cannot show it): the headers the pipeline was given.
    seen: list = []
    score_arrays = pipeline.score_arrays
    pipeline.score_arrays = lambda images, headers: (
        seen.extend(headers) or score_arrays(images, headers)
    )
    pipeline.score_series_dir(tmp_path / "enhanced")
    assert [h.te_ms for h in seen] == echoes
    assert {(h.phase_encode, h.pixel_bandwidth_hz, h.field_strength_t, h.tr_ms) for h in seen} == {
        ("COL", 130.0, 1.5, 600.0)
    }
    # From the command line, with the MISSION keys.
    out = tmp_path / "enhanced.npz"
    result = _score_command(tmp_path / "enhanced", out, tiny_model_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 slices" in result.stdout
    with np.load(out) as z:
        assert z["sop_instance_uid"].tolist() == [uid] * 3
        assert z["masks"].shape == (3, 10, 64, 48)


def test_a_segmentation_beside_the_images_is_not_scored(tmp_path, tiny_model_path):
    from ml.pipeline import ScoringPipeline

    uids = write_series(tmp_path / "s", slices=2, rows=48, cols=48, pe="ROW")
    stored, slopes, echoes = _frames(2, 48, 48)
    write_enhanced(tmp_path / "s" / "seg.dcm", stored, slopes, echoes)
    seg = pydicom.dcmread(tmp_path / "s" / "seg.dcm")
    seg.Modality = "SEG"  # a multi-frame object with pixel data that is not an image
    seg.save_as(tmp_path / "s" / "seg.dcm")
    result = ScoringPipeline.load(tiny_model_path).score_series_dir(tmp_path / "s")
    assert result.sop_instance_uid == uids


def test_a_multi_frame_image_is_not_taken_for_one_slice(tmp_path):
    from ml.pipeline import ScoringError, frame_pixels, pixels

    stored, slopes, echoes = _frames(2, 16, 16)
    write_enhanced(tmp_path / "IM", stored, slopes, echoes)
    ds = pydicom.dcmread(tmp_path / "IM")
    with pytest.raises(ScoringError, match="multi-frame image of 2 frames"):
        pixels(ds)
    first, second = frame_pixels(ds)
    np.testing.assert_array_equal(first, stored[0].astype(np.float32) * 1.0)
    # A sequence read frame by frame: indexing from the end, slicing, and its bounds.
    frames = frame_pixels(ds)
    assert len(frames) == 2 and frames[-1].dtype == np.float32
    np.testing.assert_array_equal(frames[-1], second)
    assert [f.shape for f in frames[0:2]] == [(16, 16), (16, 16)]
    with pytest.raises(IndexError):
        frames[2]
    np.testing.assert_array_equal(second, stored[1].astype(np.float32) * 1.5)
    del ds.PerFrameFunctionalGroupsSequence[1]  # a frame without its own values
    with pytest.raises(ScoringError, match="1 per-frame groups for 2 frames"):
        frame_pixels(ds)
    ds = pydicom.dcmread(tmp_path / "IM")
    ds.NumberOfFrames = 3  # a header that claims more frames than the data holds
    with pytest.raises(ScoringError, match="cannot decode the pixels"):
        frame_pixels(ds)


def test_the_score_command_reports_a_folder_without_dicom(tmp_path, tiny_model_path):
    (tmp_path / "empty").mkdir()
    result = _score_command(tmp_path / "empty", tmp_path / "o.npz", tiny_model_path)
    assert result.returncode == 1
    assert "no DICOM image files" in result.stderr
    assert not (tmp_path / "o.npz").exists()


def test_the_score_command_refuses_a_series_that_is_not_mr(tmp_path, tiny_model_path):
    from pydicom.data import get_testdata_file

    (tmp_path / "ct").mkdir()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.save_as(tmp_path / "ct" / "IM1")
    result = _score_command(tmp_path / "ct", tmp_path / "o.npz", tiny_model_path)
    assert result.returncode == 1
    assert "not an MR series" in result.stderr and "holds CT images" in result.stderr
    assert not (tmp_path / "o.npz").exists()


def test_the_score_command_refuses_two_series_and_a_file_without_rows(tmp_path, tiny_model_path):
    """Two series in one folder (one in a sub-folder) were scored as one, their index mixed;
    a file with pixel data but no Rows was a traceback. Both are one clear line now."""
    write_series(tmp_path / "two" / "a", slices=2)
    write_series(tmp_path / "two" / "b", slices=2)
    result = _score_command(tmp_path / "two", tmp_path / "o.npz", tiny_model_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "2 series in" in result.stderr and "one series folder at a time" in result.stderr
    write_series(tmp_path / "norows", slices=2)
    broken = sorted((tmp_path / "norows").glob("*"))[0]
    ds = pydicom.dcmread(broken)
    del ds.Rows
    ds.save_as(broken)
    result = _score_command(tmp_path / "norows", tmp_path / "o.npz", tiny_model_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no Rows or Columns" in result.stderr
    assert not (tmp_path / "o.npz").exists()


def test_a_transposed_slice_with_swapped_phase_encode_gets_transposed_masks(tiny_model_path):
    from ml.pipeline import ScoringPipeline
    from ml.simulate.header import AcquisitionHeader

    pipeline = ScoringPipeline.load(tiny_model_path)
    image, _ = head_phantom(64)
    image = image[:, 8:56] + np.linspace(0, 0.2, 48, dtype=np.float32)  # 64x48, asymmetric
    row = AcquisitionHeader(rows=64, columns=48, phase_encode="ROW", pixel_spacing_mm=(1.0, 0.8))
    col = AcquisitionHeader(rows=48, columns=64, phase_encode="COL", pixel_spacing_mm=(0.8, 1.0))
    raw = pipeline.infer(image[None, :, :], np.zeros((1, 8), np.float32))["masks"]
    pipeline.thresholds[:] = float(np.median(raw))  # an untrained model sits near 0.5
    m_row, p_row, s_row = pipeline.score_arrays([image], [row])
    m_col, p_col, s_col = pipeline.score_arrays([image.T.copy()], [col])
    assert 0 < m_row.mean() < 1
    np.testing.assert_array_equal(m_col[0], np.swapaxes(m_row[0], -1, -2))
    np.testing.assert_allclose(p_col, p_row, atol=1e-6)
    np.testing.assert_allclose(s_col, s_row, atol=1e-6)


@pytest.mark.parametrize("shape", [(50, 70), (64, 64), (33, 129)])
def test_any_matrix_size_is_scored_on_its_own_grid(tiny_model_path, shape):
    from ml.pipeline import get_pipeline
    from ml.simulate.header import AcquisitionHeader

    pipeline = get_pipeline(tiny_model_path)
    assert get_pipeline(tiny_model_path) is pipeline  # cached per process
    image = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    header = AcquisitionHeader(rows=shape[0], columns=shape[1], phase_encode="COL")
    masks, presence, suitability = pipeline.score_arrays([image, image], [header, header])
    assert masks.shape == (2, 10, *shape)
    assert presence.shape == (2, 10) and suitability.shape == (2,)
    assert np.all((suitability >= 0) & (suitability <= 1))


def test_score_series_dir_reads_the_rescaled_pixels_in_series_order(tmp_path, tiny_model_path):
    from ml.pipeline import ScoringPipeline

    uids = write_series(tmp_path / "s", slices=2, rows=48, cols=48, pe="ROW")
    result = ScoringPipeline.load(tiny_model_path).score_series_dir(tmp_path / "s")
    assert result.sop_instance_uid == uids
    assert result.classes == ARTIFACT_TYPES
    assert result.masks.shape == (2, 10, 48, 48)
    assert result.series_suitability == pytest.approx(float(result.suitability.mean()))


def test_full_and_pruned_are_served_by_onnx_runtime_and_keras_stays_available():
    from ml.cli.score import model_weights
    from ml.pipeline import SHIPPED

    assert model_weights("pruned") == "pruned-onnx" and model_weights("full") == "full-onnx"
    assert model_weights("pruned-keras") == "pruned" and SHIPPED["pruned"].suffix == ".keras"
    assert model_weights("full-keras") == "full"
    assert model_weights("/some/model.onnx") == "/some/model.onnx"


def test_a_gpu_host_on_jax_keeps_the_keras_file(monkeypatch):
    """Where Keras runs on JAX with a GPU, ``--model full``/``pruned`` stay the Keras files:
    they run on the GPU (ONNX Runtime's CPU build would not). No GPU here: CuPy's answer is
    what the host would say."""
    import ml.pipeline
    from ml.cli.score import model_weights

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert model_weights("full") == "full-onnx"  # JAX without a GPU: ONNX Runtime is faster
    monkeypatch.setattr(ml.pipeline, "cupy_available", lambda: True)
    assert model_weights("full") == "full" and model_weights("pruned") == "pruned"
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")  # TensorFlow's CPU build: ONNX Runtime
    assert model_weights("full") == "full-onnx"


@pytest.mark.parametrize("name", ["pruned", "full"])
def test_the_shipped_onnx_files_hold_the_shipped_keras_weights(name):
    """``--model pruned``/``full`` serve the ``.onnx`` export: it must be of the same weights."""
    from ml.model.export import TOLERANCE
    from ml.pipeline import ScoringPipeline
    from ml.simulate.header import AcquisitionHeader

    keras_pipe, onnx_pipe = ScoringPipeline.load(name), ScoringPipeline.load(f"{name}-onnx")
    assert keras_pipe.working_size == onnx_pipe.working_size
    image, _ = head_phantom(128)
    images = np.stack([image[:, :96], image[:, 16:112] * 0.7]).astype(np.float32)
    headers = np.stack([np.linspace(-1, 1, 8, dtype=np.float32)] * 2)
    a, b = keras_pipe.infer(images, headers), onnx_pipe.infer(images, headers)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=TOLERANCE)
    header = AcquisitionHeader(rows=128, columns=96, phase_encode="ROW")
    m_keras = keras_pipe.score_arrays(list(images), [header, header])[0]
    m_onnx = onnx_pipe.score_arrays(list(images), [header, header])[0]
    assert (m_keras != m_onnx).mean() < 1e-3
