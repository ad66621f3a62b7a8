"""Senders racing with the same instances (a retried STOW, a PACS that sends twice): one row per
instance, the right count, and every stored file still readable (the loser of a unique-constraint
race must not delete the file the winner stored under the same key)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from backend.ingest.services import series_ingest
from backend.storage.store import store_get
from backend.studies.models import Instance, Series
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("scratch_store")]


def test_four_senders_of_the_same_series_leave_one_readable_copy_of_each_instance(site_a):
    # The series exists already, so the senders meet at the instances' unique constraint.
    series_ingest(site=site_a, files=[to_bytes(mr_dataset(99))], source="stow")
    files = [to_bytes(mr_dataset(i)) for i in range(1, 9)]
    start = threading.Barrier(4)
    outcomes: list[list[str]] = []
    errors: list[BaseException] = []

    def send(order: list[bytes]) -> None:
        try:
            start.wait()
            outcomes.append(
                [o.status for o in series_ingest(site=site_a, files=order, source="stow")]
            )
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    orders = [files, files[::-1], files[1:] + files[:1], files]
    threads = [threading.Thread(target=send, args=(order,)) for order in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sum(s.count("accepted") for s in outcomes) == 8
    assert all(set(s) <= {"accepted", "duplicate"} for s in outcomes)
    assert Instance.objects.count() == 9
    assert Series.objects.get().instance_count == 9
    for instance in Instance.objects.all():
        assert store_get(instance.storage_key)[128:132] == b"DICM"


def test_two_senders_of_two_patients_in_one_new_study_leave_one_patient_in_it(site_a):
    """Two senders make the same new study at once, each with another patient's series (a PACS
    that mixed two PatientIDs in one StudyInstanceUID): one of them makes the study, the other
    finds it (its insert loses at the unique constraint) and has its files refused
    (security checklist D-12); the study never holds two patients."""
    from backend.ingest.services import MIXED_PATIENTS

    def of(patient: str, series: str) -> list[bytes]:
        files = []
        for i in range(1, 5):
            ds = mr_dataset(i + (10 if series else 0))
            ds.PatientID = patient
            ds.SeriesInstanceUID = ds.SeriesInstanceUID + series
            files.append(to_bytes(ds))
        return files

    start = threading.Barrier(2)
    outcomes: dict[str, list[tuple[str, str]]] = {}
    errors: list[BaseException] = []

    def send(patient: str, files: list[bytes]) -> None:
        try:
            start.wait()
            sent = series_ingest(site=site_a, files=files, source="stow")
            outcomes[patient] = [(o.status, o.reason) for o in sent]
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=send, args=("PAT-A", of("PAT-A", ""))),
        threading.Thread(target=send, args=("PAT-B", of("PAT-B", ".7"))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    # One sender's files all accepted, the other's all refused (whichever thread won).
    results = sorted(tuple(sorted(set(o))) for o in outcomes.values())
    assert results == [(("accepted", ""),), (("rejected", MIXED_PATIENTS),)], outcomes
    assert Instance.objects.count() == 4 and Series.objects.count() == 1
