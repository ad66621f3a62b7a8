"""Every file shipped with pydicom's own tests, run through the door (the pattern of Kitware's
dicom-anonymizer tests/test_anon.py): no crash on any of them; the MR images go through with
none of their names or IDs left, and everything else is refused with a reason."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.pixels.decoders.base import get_decoder

from backend.deid.profile import Rejected, deidentify_bytes, read_dicom
from tests.deid.builders import as_acquired

KEY = b"k" * 32
CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"
IDENTIFYING = ("PatientID", "AccessionNumber", "InstitutionName", "StationName")
FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file())


def _identifying_values(path: Path) -> list[bytes]:
    ds = pydicom.dcmread(path)
    # Kept on purpose: MR_small's institution is "TOSHIBA", inside its maker "TOSHIBA_MEC".
    kept = f"{ds.get('Manufacturer', '')} {ds.get('ManufacturerModelName', '')}"
    found = []
    for element in ds.iterall():
        if element.VR == "PN" or element.keyword in IDENTIFYING:
            text = str(element.value or "").strip()
            if len(text) >= 4 and text not in kept:
                found.append(text.encode())
    return found


def test_the_corpus_is_there():
    assert len(FILES) > 50


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(CORPUS)) for p in FILES])
def test_every_corpus_file_is_de_identified_or_refused_with_a_reason(path):
    data = path.read_bytes()
    try:
        out, ds = deidentify_bytes(data, key=KEY)
    except Rejected as refused:
        assert refused.reason
        return
    assert ds.SOPClassUID in ("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1")
    assert ds.PatientIdentityRemoved == "YES"
    assert [v for v in _identifying_values(path) if v in out] == []


@pytest.mark.parametrize(
    "name",
    ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
     "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"],
)  # fmt: skip
def test_the_mr_images_are_accepted_in_every_syntax_this_environment_can_decode(name):
    data = as_acquired((CORPUS / name).read_bytes())  # its DERIVED\\SECONDARY is refused (D-09)
    syntax = pydicom.dcmread(CORPUS / name).file_meta.TransferSyntaxUID
    decodable = not syntax.is_compressed or get_decoder(syntax).is_available
    if decodable:
        out, _ = deidentify_bytes(data, key=KEY)
        original = pydicom.dcmread(CORPUS / name)
        reread = pydicom.dcmread(pydicom.filebase.DicomBytesIO(out))
        assert (reread.pixel_array == original.pixel_array).all()
    else:  # JPEG-LS without pylibjpeg-libjpeg, say: refused, never stored undecodable
        with pytest.raises(Rejected, match="transfer syntax"):
            read_dicom(data)


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
def test_the_truncated_corpus_files_are_refused(name):
    with pytest.raises(Rejected, match="past the end"):
        read_dicom((CORPUS / name).read_bytes())


def test_the_corpus_dicomdirs_are_refused():
    for path in CORPUS.glob("dicomdirtests/**/DICOMDIR*"):
        with pytest.raises(Rejected, match="DICOMDIR"):
            read_dicom(path.read_bytes())
