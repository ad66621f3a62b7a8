"""QIDO-RS query keys, matching, includefield and the Warning header (PS3.18 §8.3.4), and
WADO-RS at the study level (retrieve, metadata)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from backend.dicomweb import multipart
from backend.ingest.services import series_ingest
from backend.storage.store import store_get
from backend.studies.models import Study
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scratch_store")]


def _study(site, patient: str, date: str, description: str, slices: int = 2):
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    for n in range(1, slices + 1):
        ds = mr_dataset(n, rows=32, columns=32)
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientID, ds.StudyDate, ds.StudyDescription = patient, date, description
        files.append(to_bytes(ds))
    outcomes = series_ingest(site=site, files=files, source="upload")
    assert {o.status for o in outcomes} == {"accepted"}
    return Study.objects.get(study_uid=outcomes[0].study_uid)


@pytest.fixture
def two(site_a):
    first = _study(site_a, "PATIENT-ONE", "20240315", "MR BRAIN")
    second = _study(site_a, "PATIENT-TWO", "20230101", "MR HEAD", slices=3)
    return first, second


def _uids(body) -> list[str]:
    return sorted(s["0020000D"]["Value"][0] for s in body)


def _get(api, user, url, **params):
    response = api.as_(user).get(url, params)
    assert response.status_code == 200, response.content[:300]
    return response


def test_a_study_carries_its_shifted_date_and_pseudonym_as_its_files_do(api, radiologist_a, two):
    first, _ = two
    stored = pydicom.dcmread(
        io.BytesIO(store_get(first.series.first().instances.first().storage_key))
    )
    assert first.study_date.strftime("%Y%m%d") == stored.StudyDate != "20240315"
    body = _get(api, radiologist_a, "/dicomweb/studies", StudyInstanceUID=first.study_uid).json()
    [study] = body
    assert study["00080020"]["Value"] == [stored.StudyDate]
    assert study["00100020"]["Value"] == [stored.PatientID]
    assert study["00100010"]["Value"] == [{"Alphabetic": str(stored.PatientName)}]
    assert "Value" not in study["00080050"]  # AccessionNumber: removed at the door


def test_studies_match_on_date_patient_description_and_modality(api, radiologist_a, two):
    first, second = two
    both = _uids([{"0020000D": {"Value": [s.study_uid]}} for s in two])
    day = first.study_date.strftime("%Y%m%d")
    url = "/dicomweb/studies"
    assert _uids(_get(api, radiologist_a, url, StudyDate=day).json()) == [first.study_uid]
    assert _uids(_get(api, radiologist_a, url, **{"00080020": day}).json()) == [first.study_uid]
    low, high = sorted([first.study_date, second.study_date])
    span = f"{low:%Y%m%d}-{high:%Y%m%d}"
    assert _uids(_get(api, radiologist_a, url, StudyDate=span).json()) == both
    assert _uids(_get(api, radiologist_a, url, StudyDate=f"{high:%Y%m%d}-").json()) == [
        (first if first.study_date == high else second).study_uid
    ]
    assert _uids(_get(api, radiologist_a, url, StudyDate=f"-{low:%Y%m%d}").json()) == [
        (first if first.study_date == low else second).study_uid
    ]
    patient = first.patient_pseudonym
    assert _uids(_get(api, radiologist_a, url, PatientID=patient).json()) == [first.study_uid]
    # Wildcards; a patient's name without regard to case.
    assert _uids(_get(api, radiologist_a, url, PatientName="anon-*").json()) == both
    assert _uids(_get(api, radiologist_a, url, PatientName=patient[:-1] + "?").json()) == [
        first.study_uid
    ]
    assert _uids(_get(api, radiologist_a, url, StudyDescription="MR H*").json()) == [
        second.study_uid
    ]
    assert _uids(_get(api, radiologist_a, url, StudyDescription="mr h*").json()) == []
    assert _uids(_get(api, radiologist_a, url, ModalitiesInStudy="MR").json()) == both
    assert _get(api, radiologist_a, url, ModalitiesInStudy="CT").json() == []
    # A UID list.
    listed = f"{first.study_uid}\\{second.study_uid}"
    assert _uids(_get(api, radiologist_a, url, StudyInstanceUID=listed).json()) == both
    # Removed at the door: no study holds an accession number; empty asks without matching.
    assert _get(api, radiologist_a, url, AccessionNumber="12345").json() == []
    assert _uids(_get(api, radiologist_a, url, AccessionNumber="").json()) == both
    # Counts stay those of every series whatever matched.
    [only] = _get(api, radiologist_a, url, ModalitiesInStudy="MR", PatientID=patient).json()
    assert only["00201208"]["Value"] == [2] and only["00201206"]["Value"] == [1]


def test_a_key_we_cannot_match_is_ignored_and_named_in_a_warning(api, radiologist_a, two):
    response = _get(api, radiologist_a, "/dicomweb/studies", Foo="1", SeriesNumber="3")
    assert len(response.json()) == 2
    warning = response["Warning"]
    assert warning.startswith("299 ") and "Foo" in warning and "SeriesNumber" in warning
    fuzzy = _get(api, radiologist_a, "/dicomweb/studies", fuzzymatching="true")
    assert "Fuzzy matching is not supported" in fuzzy["Warning"]
    assert "Warning" not in _get(api, radiologist_a, "/dicomweb/studies", limit="1")


def test_a_value_its_vr_does_not_allow_is_a_400_with_the_reason(api, radiologist_a, two):
    response = api.as_(radiologist_a).get("/dicomweb/studies", {"StudyDate": "yesterday"})
    assert response.status_code == 400 and "no date" in response.content.decode()
    response = api.as_(radiologist_a).get("/dicomweb/series", {"SeriesNumber": "three"})
    assert response.status_code == 400 and "no integer" in response.content.decode()
    response = api.as_(radiologist_a).get("/dicomweb/studies", {"includefield": "NoSuchThing"})
    assert response.status_code == 400


def test_series_and_instances_match_their_own_keys_and_their_studys(api, radiologist_a, two):
    first, second = two
    day = first.study_date.strftime("%Y%m%d")
    series = _get(api, radiologist_a, "/dicomweb/series", StudyDate=day).json()
    assert [s["0020000D"]["Value"][0] for s in series] == [first.study_uid]
    assert len(_get(api, radiologist_a, "/dicomweb/series", SeriesNumber="3").json()) == 2
    assert _get(api, radiologist_a, "/dicomweb/series", SeriesNumber="4").json() == []
    assert len(_get(api, radiologist_a, "/dicomweb/series", SeriesDescription="T2*").json()) == 2
    url = f"/dicomweb/studies/{second.study_uid}/instances"
    [two_] = _get(api, radiologist_a, url, InstanceNumber="2").json()
    assert two_["00200013"]["Value"] == [2]
    everything = _get(api, radiologist_a, "/dicomweb/instances", PatientID=first.patient_pseudonym)
    assert len(everything.json()) == 2
    sops = [i["00080018"]["Value"][0] for i in _get(api, radiologist_a, url).json()]
    listed = _get(api, radiologist_a, url, SOPInstanceUID=",".join(sops[:2])).json()
    assert sorted(i["00080018"]["Value"][0] for i in listed) == sorted(sops[:2])
    assert len(_get(api, radiologist_a, url, SOPClassUID="1.2.840.10008.5.1.4.1.1.4").json()) == 3


def test_includefield_adds_attributes_from_the_stored_metadata(api, radiologist_a, two):
    first, _ = two
    uid = first.study_uid
    # A series: its first instance's values; asked for and absent: present without a value.
    [series] = _get(
        api, radiologist_a, f"/dicomweb/studies/{uid}/series",
        includefield=["MagneticFieldStrength", "00180050,PatientSex"],
    ).json()  # fmt: skip
    assert series["00180087"]["Value"] == [3.0]
    assert series["00180050"]["Value"] == [5.0]  # SliceThickness
    assert series["00100040"] == {"vr": "CS"}
    # all: an instance gives its whole metadata (bulk data left out) ...
    [instance, _] = _get(
        api, radiologist_a, f"/dicomweb/studies/{uid}/instances", includefield="all"
    ).json()
    assert instance["00200032"]["vr"] == "DS"  # ImagePositionPatient
    assert instance["00120062"]["Value"] == ["YES"]  # PatientIdentityRemoved
    assert "7FE00010" not in instance
    # ... a study its study- and patient-level attributes, not an image's.
    [study] = _get(api, radiologist_a, "/dicomweb/studies", StudyInstanceUID=uid,
                   includefield="all").json()  # fmt: skip
    assert study["00120062"]["Value"] == ["YES"]
    assert "00200032" not in study and "00180087" not in study


def test_the_whole_study_and_its_metadata_are_retrieved(api, radiologist_a, radiologist_b, two):
    first, _ = two
    url = f"/dicomweb/studies/{first.study_uid}"
    response = api.as_(radiologist_a).get(
        url, HTTP_ACCEPT='multipart/related; type="application/dicom"'
    )
    assert response.status_code == 200
    assert response.streaming  # a study may be gigabytes: never held whole
    body = b"".join(response.streaming_content)
    boundary = multipart.boundary_of(response["Content-Type"])
    parts = [
        pydicom.dcmread(io.BytesIO(bytes(part))) for _, part in multipart.parts(body, boundary)
    ]
    assert sorted(int(p.InstanceNumber) for p in parts) == [1, 2]
    assert {p.StudyInstanceUID for p in parts} == {first.study_uid}
    metadata = api.as_(radiologist_a).get(f"{url}/metadata").json()
    assert len(metadata) == 2 and "7FE00010" not in metadata[0]
    assert {m["0020000D"]["Value"][0] for m in metadata} == {first.study_uid}
    assert api.as_(radiologist_b).get(url).status_code == 404
    assert api.as_(radiologist_b).get(f"{url}/metadata").status_code == 404


def test_a_malformed_key_is_not_echoed_into_the_warning(api, radiologist_a, two):
    response = _get(api, radiologist_a, "/dicomweb/studies", **{'a"\nb': "1"})
    assert len(response.json()) == 2
    assert "(a malformed key)" in response["Warning"] and "\n" not in response["Warning"]


def test_includefield_never_reads_the_models_seg(api, radiologist_a, site_a):
    """A study's representative image for includefield is an image, never our DICOM SEG (whose
    segments would tell a blinded reader what the model found), even where the images carry no
    SeriesNumber and the SEG sorts first."""
    from backend.scoring.masks import mask_key, mask_put
    from backend.scoring.models import Finding, ModelVersion, ScoringRun
    from backend.scoring.seg import seg_store
    from backend.studies.models import Series

    study = _study(site_a, "PATIENT-ONE", "20240315", "MR BRAIN")
    series = Series.objects.get(study=study)
    Series.objects.filter(pk=series.pk).update(series_number=None)
    model = ModelVersion.objects.create(
        name="t", version="t1", sha256="1" * 64, weights_key="-", classes=[]
    )
    run = ScoringRun.objects.create(series=series, site=site_a, model_version=model, status="done")
    instance = series.instances.first()
    key = mask_key(site_id=site_a.pk, run_id=str(run.pk), sop_uid=instance.sop_uid,
                   artifact="motion")  # fmt: skip
    mask = np.zeros((32, 32), np.uint8)
    mask[4:20, 4:20] = 1
    mask_put(key, mask)
    Finding.objects.create(
        run=run, instance=instance, site=site_a, artifact_type="motion", mask_key=key,
        area_px=256, area_fraction=0.25, confidence=0.9,
    )  # fmt: skip
    assert seg_store(run)
    [found] = _get(api, radiologist_a, "/dicomweb/studies", StudyInstanceUID=study.study_uid,
                   includefield="00620002,00080060").json()  # fmt: skip
    assert "Value" not in found["00620002"]  # SegmentSequence: absent from an MR image
    assert found["00080060"]["Value"] == ["MR"]


def test_a_study_date_missing_from_its_first_file_is_taken_from_a_later_series(site_a):
    study_uid = generate_uid()
    files = []
    for n, date in ((1, ""), (2, "20240315")):  # StudyDate is Type 2: may be empty
        ds = mr_dataset(n, rows=32, columns=32)
        ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (
            generate_uid(), study_uid, generate_uid(),
        )  # fmt: skip
        ds.StudyDate = date
        files.append(to_bytes(ds))
    series_ingest(site=site_a, files=files[:1], source="upload")
    study = Study.objects.get(site=site_a)
    assert study.study_date is None
    series_ingest(site=site_a, files=files[1:], source="upload")
    study.refresh_from_db()
    stored = pydicom.dcmread(
        io.BytesIO(store_get(study.series.get(series_number=3, instances__instance_number=2)
                             .instances.get().storage_key))
    )  # fmt: skip
    assert study.study_date is not None
    assert study.study_date.strftime("%Y%m%d") == stored.StudyDate
