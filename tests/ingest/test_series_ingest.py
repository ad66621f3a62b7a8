"""series_ingest: de-identified at the door, stored encrypted, idempotent, refusals quarantined."""

from __future__ import annotations

import datetime

import pydicom
import pytest

from backend.deid.profile import _days_of, _pseudonym_of, pseudonymous_uid, site_key
from backend.ingest.models import QuarantinedFile
from backend.ingest.services import MIXED_PATIENTS, series_ingest
from backend.storage.store import store_get
from backend.studies.models import Instance, Scanner, Series, Study
from tests.deid.builders import CANARIES, STUDY_UID, mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scratch_store")]


def test_a_series_lands_de_identified_and_encrypted(site_a, settings):
    outcomes = series_ingest(
        site=site_a, files=[to_bytes(mr_dataset(i)) for i in (1, 2, 3)], source="upload"
    )
    assert [o.status for o in outcomes] == ["accepted"] * 3
    study = Study.objects.get(site=site_a)
    assert study.study_uid != STUDY_UID and study.study_uid.startswith("2.25.")
    series = Series.objects.get(study=study)
    assert series.description == "T2 TSE AX" and series.protocol == "t2_tse_ax"
    instance = Instance.objects.filter(series=series).order_by("instance_number").first()
    assert (instance.field_strength_t, instance.pixel_bandwidth_hz) == (3.0, 130.0)
    assert instance.phase_encode_direction == "ROW"
    assert (instance.rows, instance.columns, instance.echo_time_ms) == (32, 32, 90.0)
    on_disk = (settings.MEDIA_ROOT / instance.storage_key).read_bytes()
    stored = store_get(instance.storage_key)
    assert stored[128:132] == b"DICM" and b"DICM" not in on_disk
    assert not [c for c in CANARIES if c.encode() in stored]
    for model in (Study, Series, Instance, Scanner):
        text = " ".join(str(v) for row in model.objects.values() for v in row.values())
        assert not [c for c in CANARIES if c in text], model


def test_the_same_instance_twice_is_stored_once(site_a):
    data = to_bytes(mr_dataset(1))
    first, second = series_ingest(site=site_a, files=[data, data], source="stow")
    assert (first.status, second.status) == ("accepted", "duplicate")
    assert first.instance_id == second.instance_id
    assert Instance.objects.count() == 1


def test_the_scanner_is_known_by_a_keyed_pseudonym(site_a):
    series_ingest(site=site_a, files=[to_bytes(mr_dataset(1))], source="upload")
    scanner = Scanner.objects.get()
    assert len(scanner.pseudonym) == 16 and scanner.manufacturer == "SIEMENS"
    assert Series.objects.get().scanner == scanner


def test_a_bad_file_is_quarantined_and_the_good_ones_still_land(site_a):
    bad = to_bytes(mr_dataset(9))[:-200]
    outcomes = series_ingest(
        site=site_a, files=[to_bytes(mr_dataset(1)), bad, to_bytes(mr_dataset(2))], source="upload"
    )
    assert [o.status for o in outcomes] == ["accepted", "rejected", "accepted"]
    assert "past the end" in outcomes[1].reason
    quarantined = QuarantinedFile.objects.get()
    assert quarantined.site == site_a and quarantined.size_bytes == len(bad)
    assert store_get(quarantined.storage_key) == bad  # kept, encrypted, for an admin to inspect
    assert Instance.objects.count() == 2


def test_two_sites_sending_the_same_study_stay_apart(site_a, site_b):
    series_ingest(site=site_a, files=[to_bytes(mr_dataset(1))], source="upload")
    series_ingest(site=site_b, files=[to_bytes(mr_dataset(1))], source="upload")
    assert (
        Study.objects.filter(site=site_a).count() == Study.objects.filter(site=site_b).count() == 1
    )
    assert Instance.objects.count() == 2


def test_expired_quarantine_is_purged_with_its_files(site_a, settings):
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    series_ingest(site=site_a, files=[b"not dicom at all"], source="upload")
    row = QuarantinedFile.objects.get()
    path = settings.MEDIA_ROOT / row.storage_key
    assert path.exists()
    call_command("quarantine_purge")
    assert QuarantinedFile.objects.count() == 1  # not expired yet
    QuarantinedFile.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    call_command("quarantine_purge")
    assert QuarantinedFile.objects.count() == 0 and not path.exists()


def test_only_superusers_see_the_quarantine_in_the_admin(client, site_a, admin_a, superuser):
    series_ingest(site=site_a, files=[b"junk"], source="upload")
    admin_a.user.is_staff = True
    admin_a.user.save()
    client.force_login(admin_a.user)
    refused = client.get("/admin/ingest/quarantinedfile/")
    assert refused.status_code == 302 and refused["Location"].startswith("/admin/login/")
    client.force_login(superuser.user)
    assert client.get("/admin/ingest/quarantinedfile/").status_code == 200


def _second_series(i: int) -> bytes:
    ds = mr_dataset(100 + i)
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.4242"
    ds.SeriesNumber = 4
    return to_bytes(ds)


def test_a_batch_of_two_series_is_recorded_with_one_scoring_request_and_event_per_series(
    site_a, django_capture_on_commit_callbacks
):
    from tests.ingest.test_dispatch import SiteEvents, published

    files = [to_bytes(mr_dataset(i)) for i in (1, 2, 3)] + [_second_series(i) for i in (1, 2)]
    before = published()
    with SiteEvents(site_a.pk) as events:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            outcomes = series_ingest(site=site_a, files=files, source="stow")
        assert [o.status for o in outcomes] == ["accepted"] * 5
        counts = sorted(Series.objects.filter(site=site_a).values_list("instance_count", flat=True))
        assert counts == [2, 3]
        assert Instance.objects.count() == 5
        assert len({o.series_id for o in outcomes}) == 2
        # One hand-over after the commit; then one instance.received event and one scoring
        # request per series, not one per file.
        assert len(callbacks) == 1
        received = events.take(2)
    assert published() - before == 2
    by_series = {e["data"]["series_id"]: e["data"] for e in received}
    assert {k: v["count"] for k, v in by_series.items()} == {
        o.series_id: sum(p.series_id == o.series_id for p in outcomes) for o in outcomes
    }
    for outcome in outcomes:
        assert outcome.instance_id in by_series[outcome.series_id]["instance_ids"]


def test_a_batch_larger_than_the_ingest_batch_is_split_and_every_file_lands(
    site_a, settings, monkeypatch
):
    from backend.ingest import services

    monkeypatch.setattr(services, "INGEST_BATCH", 2)
    bad = b"not dicom"
    files = [to_bytes(mr_dataset(i)) for i in (1, 2, 3)] + [bad, to_bytes(mr_dataset(1))]
    outcomes = series_ingest(site=site_a, files=files, source="stow")
    assert [o.status for o in outcomes] == [
        "accepted", "accepted", "accepted", "rejected", "duplicate"
    ]  # fmt: skip
    assert outcomes[4].instance_id == outcomes[0].instance_id
    assert Series.objects.get().instance_count == 3
    for instance in Instance.objects.all():
        assert store_get(instance.storage_key)[128:132] == b"DICM"
    leftovers = [p for p in settings.MEDIA_ROOT.rglob(".tmp-*")]
    assert leftovers == []


def test_batches_close_at_a_byte_budget_as_well_as_a_file_count(monkeypatch):
    """A batch's de-identified files are all in memory at once: it takes no more files once
    it holds ``INGEST_BATCH_BYTES`` (large or multi-frame files), or ``INGEST_BATCH`` files."""
    from backend.ingest import services

    monkeypatch.setattr(services, "INGEST_BATCH", 4)
    monkeypatch.setattr(services, "INGEST_BATCH_BYTES", 100)
    files = [b"a" * 40, b"b" * 40, b"c" * 40, b"d" * 250, b"e" * 10, b"f", b"g", b"h", b"i"]
    assert [[f[:1] for f in batch] for batch in services._batches(files)] == [
        [b"a", b"b", b"c"], [b"d"], [b"e", b"f", b"g", b"h"], [b"i"]
    ]  # fmt: skip
    assert services.in_one_batch([b"a" * 40, b"b" * 40])
    assert services.in_one_batch(files[:3]) and not services.in_one_batch(files[:4])
    assert not services.in_one_batch([b"x"] * 5)
    assert services.in_one_batch([])


def test_the_same_instance_in_one_batch_twice_is_stored_once(site_a):
    data = to_bytes(mr_dataset(7))
    outcomes = series_ingest(
        site=site_a, files=[data, to_bytes(mr_dataset(8)), data], source="stow"
    )
    assert [o.status for o in outcomes] == ["accepted", "accepted", "duplicate"]
    assert outcomes[2].instance_id == outcomes[0].instance_id
    assert Series.objects.get().instance_count == 2


def test_a_file_that_cannot_be_written_leaves_no_row(site_a, settings):
    """The files are written on a thread while the rows are made: a write that fails (here a
    file stands where the store's directory must go) fails the ingest and rolls the rows back,
    so no row ever points at a file that is not there."""
    settings.MEDIA_ROOT.mkdir(parents=True)
    (settings.MEDIA_ROOT / "instances").write_bytes(b"in the way")
    with pytest.raises(OSError):
        series_ingest(site=site_a, files=[to_bytes(mr_dataset(i)) for i in (1, 2)], source="stow")
    assert not Instance.objects.exists()
    assert not Series.objects.exists()


def test_the_rows_of_a_batch_go_in_in_one_order_whatever_the_order_sent(site_a):
    """Two senders of the same instances in opposite orders must not each hold rows the other
    waits for (on PostgreSQL one of them would fail with a deadlock): the rows of a batch are
    inserted in SOP Instance UID order, whatever order the files came in."""
    from django.db import connection

    files = [to_bytes(mr_dataset(i)) for i in range(1, 13)]
    outcomes = series_ingest(site=site_a, files=files[::-1], source="stow")
    assert [o.status for o in outcomes] == ["accepted"] * 12
    physical = "ctid" if connection.vendor == "postgresql" else "rowid"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT sop_uid FROM {Instance._meta.db_table} ORDER BY {physical}")
        inserted = [row[0] for row in cursor.fetchall()]
    assert sorted(inserted) == sorted(o.sop_uid for o in outcomes)
    assert inserted == sorted(inserted)


def test_the_same_patient_and_study_at_two_sites_are_two_and_never_link(site_a, site_b, settings):
    """Two hospitals' patient "12345" (security checklist A-06), and one study sent to two sites
    (D-04): each site's copy gets its own UIDs, patient pseudonym and date shift (the site's
    key), so nothing can merge or link them; within a site a patient's studies still group
    under one pseudonym, keep their intervals, and a file sent again is the same instance."""

    def sent(site, sop: int, later: bool = False) -> tuple[pydicom.Dataset, str]:
        ds = mr_dataset(sop)
        ds.PatientID = "12345"
        if later:  # another study of the patient, nine days after the first (2024-03-15)
            ds.StudyInstanceUID = STUDY_UID + ".9"
            ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".9"
            ds.StudyDate = "20240324"
        (outcome,) = series_ingest(site=site, files=[to_bytes(ds)], source="stow")
        stored = store_get(Instance.objects.get(pk=outcome.instance_id).storage_key)
        return pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored)), outcome.status

    def expected(site) -> tuple[str, str, str]:
        key = site_key(settings.DEID_KEY, str(site.pk))
        day = datetime.date(2024, 3, 15) - datetime.timedelta(days=_days_of("12345", key))
        study = pseudonymous_uid(STUDY_UID, key=key)
        return _pseudonym_of("12345", key), day.strftime("%Y%m%d"), study

    (at_a, status_a), (at_b, status_b) = sent(site_a, 1), sent(site_b, 1)
    later_at_a, _ = sent(site_a, 2, later=True)
    again_at_a, status_again = sent(site_a, 1)
    assert (status_a, status_b, status_again) == ("accepted", "accepted", "duplicate")
    assert (at_a.PatientID, at_a.StudyDate, at_a.StudyInstanceUID) == expected(site_a)
    assert (at_b.PatientID, at_b.StudyDate, at_b.StudyInstanceUID) == expected(site_b)
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert at_a.get(keyword) != at_b.get(keyword), keyword
    assert at_a.PatientName == at_a.PatientID and at_b.PatientName == at_b.PatientID
    assert later_at_a.PatientID == at_a.PatientID, "one patient at one site"
    first, later = (datetime.date.fromisoformat(d.StudyDate) for d in (at_a, later_at_a))
    assert (later - first).days == 9
    assert again_at_a.SOPInstanceUID == at_a.SOPInstanceUID
    # Not the installation-wide pseudonyms of before, which linked the two sites' copies.
    assert at_a.PatientID != _pseudonym_of("12345", settings.DEID_KEY)
    assert at_a.StudyInstanceUID != pseudonymous_uid(STUDY_UID, key=settings.DEID_KEY)
    assert Study.objects.filter(site=site_a).count() == 2
    assert Study.objects.filter(site=site_b).count() == 1


def _of_patient(sop: int, patient_id: str, series: str = "") -> bytes:
    ds = mr_dataset(sop)
    ds.PatientID = patient_id
    if series:
        ds.SeriesInstanceUID = ds.SeriesInstanceUID + series
    return to_bytes(ds)


def test_another_patients_file_in_a_study_is_quarantined_and_the_study_keeps_one(site_a, settings):
    """One study, one patient (security checklist D-12): a sender that mixes two PatientIDs in
    one StudyInstanceUID gets the second patient's files refused and quarantined with their
    originals, in one batch and in later requests, by the series already known and by a new
    one; never two pseudonyms or two date shifts in one study."""
    key = site_key(settings.DEID_KEY, str(site_a.pk))
    first = [
        _of_patient(1, "PAT-A"),
        _of_patient(2, "PAT-B"),  # the same series
        _of_patient(3, "PAT-A"),
        _of_patient(4, "PAT-B", series=".7"),  # another series of the study
    ]
    outcomes = series_ingest(site=site_a, files=first, source="stow")
    assert [o.status for o in outcomes] == ["accepted", "rejected", "accepted", "rejected"]
    assert outcomes[1].reason == outcomes[3].reason == MIXED_PATIENTS
    study = Study.objects.get(site=site_a)
    assert study.patient_pseudonym == _pseudonym_of("PAT-A", key)
    assert Series.objects.get().instance_count == 2, "nothing made for the refused files"
    later = [
        _of_patient(5, "PAT-B"),  # the series is known
        _of_patient(6, "PAT-B", series=".8"),  # a new series
    ]
    for data in later:
        (outcome,) = series_ingest(site=site_a, files=[data], source="cstore")
        assert (outcome.status, outcome.reason) == ("rejected", MIXED_PATIENTS)
    (outcome,) = series_ingest(site=site_a, files=[_of_patient(7, "PAT-A", ".9")], source="stow")
    assert outcome.status == "accepted"
    quarantined = QuarantinedFile.objects.order_by("received_at", "pk")
    assert sorted(q.reason for q in quarantined) == [MIXED_PATIENTS] * 4
    assert sorted(store_get(q.storage_key) for q in quarantined) == sorted(
        [first[1], first[3], *later]
    )
    assert Series.objects.count() == 2 and Instance.objects.count() == 3
    patients = {
        pydicom.dcmread(pydicom.filebase.DicomBytesIO(store_get(i.storage_key))).PatientID
        for i in Instance.objects.all()
    }
    assert patients == {study.patient_pseudonym}


def test_a_study_recorded_before_its_patient_was_kept_takes_its_next_files_patient(site_a):
    series_ingest(site=site_a, files=[_of_patient(1, "PAT-A")], source="stow")
    Study.objects.update(patient_pseudonym="")  # as the migration leaves a study of before
    # Its next file claims it, in a series it knows as in a new one.
    (known,) = series_ingest(site=site_a, files=[_of_patient(2, "PAT-B")], source="stow")
    assert known.status == "accepted"
    claimed = Study.objects.get().patient_pseudonym
    assert claimed.startswith("ANON-")
    (other,) = series_ingest(site=site_a, files=[_of_patient(3, "PAT-A")], source="stow")
    assert (other.status, other.reason) == ("rejected", MIXED_PATIENTS)
    Study.objects.update(patient_pseudonym="")
    (new,) = series_ingest(site=site_a, files=[_of_patient(4, "PAT-C", ".7")], source="stow")
    assert new.status == "accepted" and Study.objects.get().patient_pseudonym != claimed
    (other,) = series_ingest(site=site_a, files=[_of_patient(5, "PAT-B", ".8")], source="stow")
    assert (other.status, other.reason) == ("rejected", MIXED_PATIENTS)


def test_files_without_a_patient_id_are_one_unknown_patient_per_study(site_a):
    """An empty PatientID (Type 2: legal) is keyed on the study (security checklist D-11): two
    studies of "ANONYMOUS" without an ID are two patients with their own pseudonyms and date
    shifts, never one "unknown" patient; one study's files stay one patient."""

    def anonymous(sop: int, study: str) -> bytes:
        ds = mr_dataset(sop)
        ds.PatientID, ds.PatientName = "", "ANONYMOUS"
        ds.StudyInstanceUID = STUDY_UID + study
        ds.SeriesInstanceUID = ds.SeriesInstanceUID + study
        return to_bytes(ds)

    files = [anonymous(1, ".1"), anonymous(2, ".1"), anonymous(3, ".2")]
    outcomes = series_ingest(site=site_a, files=files, source="upload")
    assert [o.status for o in outcomes] == ["accepted"] * 3
    stored = {
        o.sop_uid: pydicom.dcmread(
            pydicom.filebase.DicomBytesIO(
                store_get(Instance.objects.get(pk=o.instance_id).storage_key)
            )
        )
        for o in outcomes
    }
    one, same, other = (stored[o.sop_uid] for o in outcomes)
    assert one.PatientID == same.PatientID != other.PatientID
    assert one.StudyDate == same.StudyDate != other.StudyDate
    assert len({s.patient_pseudonym for s in Study.objects.all()}) == 2


def test_an_enhanced_mr_image_gets_its_acquisition_values_from_its_functional_groups(site_a):
    # Every value the advice and the dashboards read, where an Enhanced MR image keeps it:
    # bandwidth (MR Imaging Modifier), inversion time (MR Modifier), flip angle and TR (timing),
    # effective echo time (per frame), spacing and thickness, phase-encode (FOV geometry).
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from tests.deid.builders import enhanced_mr_dataset

    ds = enhanced_mr_dataset(frames=2)
    del ds.PixelBandwidth
    shared = ds.SharedFunctionalGroupsSequence[0]
    modifier, inversion = Dataset(), Dataset()
    modifier.PixelBandwidth = 240.0
    inversion.InversionTimes = [2500.0]
    shared.MRImagingModifierSequence = Sequence([modifier])
    shared.MRModifierSequence = Sequence([inversion])
    (outcome,) = series_ingest(site=site_a, files=[to_bytes(ds)], source="upload")
    assert outcome.status == "accepted", outcome.reason
    instance = Instance.objects.get()
    assert instance.frame_count == 2
    assert (instance.pixel_bandwidth_hz, instance.inversion_time_ms) == (240.0, 2500.0)
    assert (instance.repetition_time_ms, instance.flip_angle_deg) == (4000.0, 150.0)
    assert (instance.echo_time_ms, instance.slice_thickness_mm) == (90.0, 5.0)
    assert (instance.pixel_spacing_row_mm, instance.phase_encode_direction) == (0.5, "COL")
    assert instance.field_strength_t == 3.0
