"""The C-STORE SCP: registered senders' images land de-identified under their site; unknown AE
titles and hosts are rejected at association. Driven by pynetdicom's SCU and dcmtk's storescu."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage

from backend.ingest.models import DicomSender
from backend.studies.models import Instance
from tests.conftest import _free_port, _listening_process, _server_env, _wait_for
from tests.deid.builders import CANARIES, mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


def _scu(ae_title: str) -> AE:
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(MRImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    return ae


def test_a_registered_sender_stores_images_under_its_site(dicom_scp, site_a):
    DicomSender.objects.create(site=site_a, ae_title="MRI_ROOM_1", host="127.0.0.1")
    assoc = _scu("MRI_ROOM_1").associate("127.0.0.1", dicom_scp, ae_title="ARTISCAN")
    assert assoc.is_established
    statuses = [
        assoc.send_c_store(pydicom.dcmread(io.BytesIO(to_bytes(mr_dataset(i))))).Status
        for i in (1, 2)
    ]
    assoc.release()
    assert statuses == [0x0000, 0x0000]
    instances = Instance.objects.filter(site=site_a, series__modality="MR")
    assert instances.count() == 2
    assert not [c for c in CANARIES if c in " ".join(i.sop_uid for i in instances)]


@pytest.mark.parametrize(
    "name", ["MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"]
)
def test_a_compressed_image_is_taken_in_its_own_transfer_syntax(dicom_scp, site_a, name):
    """A PACS forwards its archive as stored: JPEG 2000, JPEG-LS or RLE, without converting it
    (the SCP accepts every syntax the door can decode), and the pixels land unchanged."""
    from pydicom.data import get_testdata_file

    from backend.storage.store import store_get

    original = pydicom.dcmread(get_testdata_file(name))
    original.ImageType = ["ORIGINAL", "PRIMARY", "M", "OTHER"]  # as acquired (it says DERIVED)
    syntax = original.file_meta.TransferSyntaxUID
    DicomSender.objects.get_or_create(site=site_a, ae_title="PACS_1", host="127.0.0.1")
    ae = AE(ae_title="PACS_1")
    ae.add_requested_context(MRImageStorage, [syntax])  # that syntax only: no fallback
    assoc = ae.associate("127.0.0.1", dicom_scp, ae_title="ARTISCAN")
    assert assoc.is_established
    assert [c.transfer_syntax[0] for c in assoc.accepted_contexts] == [syntax]
    status = assoc.send_c_store(original).Status
    assoc.release()
    assert status == 0x0000
    [instance] = Instance.objects.filter(site=site_a)
    stored = pydicom.dcmread(io.BytesIO(store_get(instance.storage_key)))
    assert stored.PatientIdentityRemoved == "YES"
    assert (stored.pixel_array == original.pixel_array).all()


def test_an_unknown_ae_title_is_rejected_at_association(dicom_scp, site_a):
    assoc = _scu("STRANGER").associate("127.0.0.1", dicom_scp, ae_title="ARTISCAN")
    assert assoc.is_rejected
    assert Instance.objects.count() == 0


def test_a_known_ae_title_from_another_host_is_rejected(dicom_scp, site_a):
    DicomSender.objects.create(site=site_a, ae_title="MRI_ROOM_2", host="10.9.9.9")
    assoc = _scu("MRI_ROOM_2").associate("127.0.0.1", dicom_scp, ae_title="ARTISCAN")
    assert assoc.is_rejected


def test_a_sender_without_a_host_is_refused_unless_it_may_send_from_any(dicom_scp, site_a):
    """An AE title is a name anyone can claim (security checklist O-04): a sender registered
    without its address is accepted from nowhere, until it is given one or explicitly allowed
    from any host."""
    sender = DicomSender.objects.create(site=site_a, ae_title="MRI_ROOM_4")
    assoc = _scu("MRI_ROOM_4").associate("127.0.0.1", dicom_scp, ae_title="ARTISCAN")
    assert assoc.is_rejected
    sender.any_host = True
    sender.save()
    assoc = _scu("MRI_ROOM_4").associate("127.0.0.1", dicom_scp, ae_title="ARTISCAN")
    assert assoc.is_established
    assoc.release()


def test_a_refused_file_gets_a_failure_status_and_is_quarantined(dicom_scp, site_a):
    from backend.ingest.models import QuarantinedFile

    DicomSender.objects.create(site=site_a, ae_title="MRI_ROOM_3", host="127.0.0.1")
    ds = pydicom.dcmread(io.BytesIO(to_bytes(mr_dataset(5))))
    ds.BurnedInAnnotation = "YES"
    assoc = _scu("MRI_ROOM_3").associate("127.0.0.1", dicom_scp, ae_title="ARTISCAN")
    status = assoc.send_c_store(ds).Status
    assoc.release()
    assert status == 0xC000
    assert QuarantinedFile.objects.get().reason.startswith("burned-in annotation")


def test_dcmtk_storescu_can_send_to_us(dicom_scp, site_a, tmp_path):
    DicomSender.objects.create(site=site_a, ae_title="DCMTK", any_host=True)
    path = tmp_path / "slice.dcm"
    path.write_bytes(to_bytes(mr_dataset(7)))
    result = subprocess.run(
        ["storescu", "-aet", "DCMTK", "-aec", "ARTISCAN", "127.0.0.1", str(dicom_scp), str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline and not Instance.objects.filter(series__modality="MR").exists()
    ):
        time.sleep(0.1)
    assert Instance.objects.filter(site=site_a, series__modality="MR").count() == 1


def test_a_sender_is_registered_from_the_command_line(site_a):
    from django.core.exceptions import ValidationError
    from django.core.management import call_command
    from django.core.management.base import CommandError

    call_command("dicom_sender", site_a.slug, "MRI_ROOM_9", "--host", "192.0.2.7")
    sender = DicomSender.objects.get(ae_title="MRI_ROOM_9")
    assert (sender.site, sender.host, sender.any_host) == (site_a, "192.0.2.7", False)
    assert sender.accepts_from("192.0.2.7") and not sender.accepts_from("192.0.2.8")
    call_command("dicom_sender", site_a.slug, "MRI_ROOM_9", "--any-host")
    sender.refresh_from_db()
    assert (sender.host, sender.any_host) == (None, True) and sender.accepts_from("192.0.2.8")
    with pytest.raises(CommandError, match="one of the arguments --host --any-host is required"):
        call_command("dicom_sender", site_a.slug, "MRI_ROOM_8")
    with pytest.raises(CommandError, match="IP address"):
        call_command("dicom_sender", site_a.slug, "MRI_ROOM_8", "--host", "mri.lan")
    assert not DicomSender.objects.filter(ae_title="MRI_ROOM_8").exists()
    # Nor can the admin's form save a sender that is accepted from nowhere.
    with pytest.raises(ValidationError, match="address"):
        DicomSender(site=site_a, ae_title="MRI_ROOM_7").full_clean()


def test_two_scp_processes_share_one_port_and_a_dead_one_stops_the_command(site_a, tmp_path):
    """``dicom_scp --processes 2``: concurrent associations all land, whichever process takes
    them; when one process dies the command exits with an error, so a supervisor notices."""
    from django.conf import settings

    def children(pid: int) -> list[int]:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    DicomSender.objects.create(site=site_a, ae_title="MRI_ROOM_2", host="127.0.0.1")
    port = _free_port()
    env = _server_env(settings.DATABASES["default"]["NAME"])
    command = [sys.executable, "manage.py", "dicom_scp", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--processes", "2"]
    log = tmp_path / "scp.log"
    with _listening_process(command, env=env, port=port, log=log, what="dicom_scp") as proc:
        _wait_for(lambda: len(children(proc.pid)) == 1, 30, "a second SCP process")
        statuses: list[int] = []

        def send(first: int) -> None:
            assoc = _scu("MRI_ROOM_2").associate("127.0.0.1", port, ae_title="ARTISCAN")
            assert assoc.is_established
            for i in (first, first + 1):
                ds = pydicom.dcmread(io.BytesIO(to_bytes(mr_dataset(i))))
                statuses.append(assoc.send_c_store(ds).Status)
            assoc.release()

        senders = [threading.Thread(target=send, args=(1 + 2 * k,)) for k in range(4)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        assert statuses == [0x0000] * 8
        assert Instance.objects.filter(series__study__site=site_a).count() == 8

        os.kill(children(proc.pid)[0], signal.SIGKILL)
        _wait_for(lambda: proc.poll() is not None, 30, "the command to stop")
        assert proc.returncode not in (None, 0)
        assert "a C-STORE SCP process exited" in log.read_text()


def test_a_full_store_answers_c_store_with_a_retryable_failure(site_a, tmp_path):
    """Below the store's free-space floor the SCP answers A700 (out of resources: the sender
    keeps the image and sends it again) and stores nothing."""
    from django.conf import settings

    DicomSender.objects.create(site=site_a, ae_title="MRI_ROOM_5", host="127.0.0.1")
    port = _free_port()
    env = {**_server_env(settings.DATABASES["default"]["NAME"])}
    env["ARTISCAN_STORE_MIN_FREE_MB"] = str(2**40)  # more than any disk has free
    command = [sys.executable, "manage.py", "dicom_scp", "--host", "127.0.0.1", "--port", str(port)]
    with _listening_process(command, env=env, port=port, log=tmp_path / "scp.log", what="scp"):
        assoc = _scu("MRI_ROOM_5").associate("127.0.0.1", port, ae_title="ARTISCAN")
        assert assoc.is_established
        status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(to_bytes(mr_dataset(3))))).Status
        assoc.release()
    assert status == 0xA700
    assert not Instance.objects.exists()
    assert "free-space floor" in (tmp_path / "scp.log").read_text()


def test_an_association_sending_past_the_size_limit_is_aborted(site_a, tmp_path):
    """Memory bounded per file whatever it claims (MISSION): pynetdicom gathers a dataset in
    memory until it is complete, so the SCP aborts an association that sends more than the
    instance size limit without completing one; the next sender is served as usual."""
    from django.conf import settings

    DicomSender.objects.create(site=site_a, ae_title="MRI_ROOM_6", host="127.0.0.1")
    port = _free_port()
    env = {**_server_env(settings.DATABASES["default"]["NAME"]), "ARTISCAN_MAX_INSTANCE_MB": "1"}
    command = [sys.executable, "manage.py", "dicom_scp", "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "scp.log"
    big = pydicom.dcmread(io.BytesIO(to_bytes(mr_dataset(1, rows=1200, columns=1200))))
    with _listening_process(command, env=env, port=port, log=log, what="scp"):
        assoc = _scu("MRI_ROOM_6").associate("127.0.0.1", port, ae_title="ARTISCAN")
        assert assoc.is_established
        answer = assoc.send_c_store(big)
        assert "Status" not in answer  # no answer: the association was aborted
        _wait_for(lambda: assoc.is_aborted, 10, "the abort")
        again = _scu("MRI_ROOM_6").associate("127.0.0.1", port, ae_title="ARTISCAN")
        assert again.is_established
        small = pydicom.dcmread(io.BytesIO(to_bytes(mr_dataset(2, rows=64, columns=64))))
        assert again.send_c_store(small).Status == 0x0000
        again.release()
    assert Instance.objects.filter(site=site_a).count() == 1
    assert "aborted: more than 1 MiB without a complete dataset" in log.read_text()
