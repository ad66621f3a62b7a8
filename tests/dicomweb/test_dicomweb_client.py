"""The reference DICOMweb client (dicomweb-client) against a real ArtiScan server: store, search,
retrieve, render; another site sees nothing; anonymous callers get 401."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from tests.deid.builders import CANARIES, STUDY_UID, mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


def _client(server: str, token: str | None) -> DICOMwebClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return DICOMwebClient(url=f"http://{server}/dicomweb", headers=headers)


def _datasets(n: int = 3) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(io.BytesIO(to_bytes(mr_dataset(i)))) for i in range(1, n + 1)]


def test_a_series_stored_by_stow_is_found_and_retrieved_de_identified(asgi_server, radiologist_a):
    client = _client(asgi_server, radiologist_a.token)
    originals = _datasets(3)
    receipt = client.store_instances(originals)
    assert len(receipt.ReferencedSOPSequence) == 3
    assert "FailedSOPSequence" not in receipt

    [study] = client.search_for_studies()
    study_uid = study["0020000D"]["Value"][0]
    assert study_uid != STUDY_UID and study_uid.startswith("2.25.")
    assert study["00201208"]["Value"][0] >= 3  # 3 images (+ a SEG if a worker scored them)
    # A scoring worker may already have added its SEG series to the study: look at the MR one.
    [series] = client.search_for_series(study_uid, search_filters={"Modality": "MR"})
    series_uid = series["0020000E"]["Value"][0]
    instances = client.search_for_instances(study_uid, series_uid)
    assert [i["00200013"]["Value"][0] for i in instances] == [1, 2, 3]
    sop_uid = instances[0]["00080018"]["Value"][0]

    retrieved = client.retrieve_instance(study_uid, series_uid, sop_uid)
    assert retrieved.PatientIdentityRemoved == "YES"
    assert np.array_equal(retrieved.pixel_array, originals[0].pixel_array)
    raw = io.BytesIO()
    retrieved.save_as(raw)
    assert not [c for c in CANARIES if c.encode() in raw.getvalue()]

    metadata = client.retrieve_series_metadata(study_uid, series_uid)
    assert len(metadata) == 3 and "7FE00010" not in metadata[0]
    assert metadata[0]["00180087"]["Value"] == [3.0]  # field strength kept for the advice

    # The whole study, and the usual query keys with includefield.
    whole = [ds for ds in client.retrieve_study(study_uid) if ds.Modality == "MR"]
    assert sorted(int(ds.InstanceNumber) for ds in whole) == [1, 2, 3]
    study_metadata = client.retrieve_study_metadata(study_uid)
    assert sum(m["00080060"]["Value"] == ["MR"] for m in study_metadata) == 3
    day = study["00080020"]["Value"][0]
    [found] = client.search_for_studies(
        search_filters={"StudyDate": day, "PatientID": retrieved.PatientID},
        fields=["PatientIdentityRemoved"],
    )
    assert found["00120062"]["Value"] == ["YES"]
    assert client.search_for_studies(search_filters={"StudyDate": "19000101"}) == []

    [frame] = client.retrieve_instance_frames(study_uid, series_uid, sop_uid, frame_numbers=[1])
    assert frame == originals[0].PixelData

    png = client.retrieve_instance_rendered(
        study_uid, series_uid, sop_uid, media_types=("image/png",)
    )
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    thumb = requests.get(
        f"http://{asgi_server}/dicomweb/studies/{study_uid}/series/{series_uid}/thumbnail",
        headers={"Authorization": f"Bearer {radiologist_a.token}", "Accept": "image/png"},
        timeout=30,
    )
    assert thumb.headers["Content-Type"] == "image/png"
    assert thumb.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_another_site_finds_nothing_and_gets_404(asgi_server, radiologist_a, radiologist_b):
    _client(asgi_server, radiologist_a.token).store_instances(_datasets(1))
    ours = _client(asgi_server, radiologist_a.token)
    [study] = ours.search_for_studies()
    study_uid = study["0020000D"]["Value"][0]
    [instance] = [
        i for i in ours.search_for_instances(study_uid) if i["00080016"]["Value"][0].endswith(".4")
    ]
    series_uid, sop_uid = instance["0020000E"]["Value"][0], instance["00080018"]["Value"][0]

    theirs = _client(asgi_server, radiologist_b.token)
    assert theirs.search_for_studies() == []
    with pytest.raises(requests.HTTPError) as hidden:
        theirs.search_for_instances(study_uid)
    assert hidden.value.response.status_code == 404
    with pytest.raises(requests.HTTPError) as denied:
        theirs.retrieve_instance(study_uid, series_uid, sop_uid)
    assert denied.value.response.status_code == 404


def test_a_refused_part_is_reported_and_the_others_are_stored(asgi_server, operator_a):
    good = to_bytes(mr_dataset(1))
    bad = to_bytes(mr_dataset(2))[:-100]
    boundary = "artiscanboundary"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
            for part in (good, bad)
        )
        + f"--{boundary}--\r\n".encode()
    )
    response = requests.post(
        f"http://{asgi_server}/dicomweb/studies",
        data=body,
        headers={
            "Authorization": f"Bearer {operator_a.token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
        timeout=30,
    )
    assert response.status_code == 202
    payload = response.json()
    assert len(payload["00081199"]["Value"]) == 1
    [failure] = payload["00081198"]["Value"]
    assert failure["00081197"]["Value"] == [0xC000]
    assert "past the end" in failure["00000902"]["Value"][0]


def test_an_annotator_may_not_send_images(asgi_server, annotator_a):
    with pytest.raises(requests.HTTPError) as refused:
        _client(asgi_server, annotator_a.token).store_instances(_datasets(1))
    assert refused.value.response.status_code == 403


def test_anonymous_callers_get_401(asgi_server):
    with pytest.raises(requests.HTTPError) as refused:
        _client(asgi_server, None).search_for_studies()
    assert refused.value.response.status_code == 401


def test_the_reference_client_stores_into_a_named_study(asgi_server, radiologist_a):
    # dicomweb-client's store_instances(..., study_instance_uid=...) posts to /studies/{study}.
    client = _client(asgi_server, radiologist_a.token)
    receipt = client.store_instances(_datasets(2), study_instance_uid=STUDY_UID)
    assert len(receipt.ReferencedSOPSequence) == 2
    assert "FailedSOPSequence" not in receipt
    assert len(client.search_for_studies()) == 1


def test_compressed_pixels_the_decoder_refuses_are_a_clear_error_not_a_dead_server(
    asgi_server, radiologist_a
):
    """Compressed frames are decoded out of process (ml.decode): an instance whose stream the
    decoder refuses answers 500 with the reason, and the server serves the next request."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless

    from tests.scoring.builders import undecodable_mr

    good = mr_dataset(2)
    good.file_meta = FileMetaDataset()
    good.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    good.compress(RLELossless, generate_instance_uid=False)
    client = _client(asgi_server, radiologist_a.token)
    client.store_instances(
        [pydicom.dcmread(io.BytesIO(b)) for b in (undecodable_mr(1), to_bytes(good, RLELossless))]
    )
    [study] = client.search_for_studies()
    study_uid = study["0020000D"]["Value"][0]
    [series] = client.search_for_series(study_uid, search_filters={"Modality": "MR"})
    series_uid = series["0020000E"]["Value"][0]
    by_number = {
        i["00200013"]["Value"][0]: i["00080018"]["Value"][0]
        for i in client.search_for_instances(study_uid, series_uid)
    }
    base = f"http://{asgi_server}/dicomweb/studies/{study_uid}/series/{series_uid}/instances"
    auth = {"Authorization": f"Bearer {radiologist_a.token}"}
    for tail in ("rendered", "frames/1"):
        bad = requests.get(f"{base}/{by_number[1]}/{tail}", headers=auth, timeout=30)
        assert bad.status_code == 500
        assert "cannot be decoded" in bad.json()["detail"] and "RLE" in bad.json()["detail"]
    [frame] = client.retrieve_instance_frames(study_uid, series_uid, by_number[2], [1])
    assert frame == good.pixel_array.tobytes()
    png = requests.get(f"{base}/{by_number[2]}/rendered", headers=auth, timeout=30)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
