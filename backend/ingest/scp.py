"""The C-STORE SCP (pynetdicom): modalities and PACS push MR images; each one goes through
``instance_ingest`` like every other way in.

Associations are accepted only from the AE titles registered as ``DicomSender``, each from its
own host (``DicomSender.accepts_from``); the rest are rejected with "calling AE title not
recognised" before any data arrives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, connections
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, evt

from backend.deid.profile import supported_transfer_syntaxes
from backend.ingest.models import DicomSender
from backend.ingest.services import instance_ingest
from backend.storage.store import StoreFull

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
VERIFICATION = "1.2.840.10008.1.1"
TRANSFER_SYNTAXES = supported_transfer_syntaxes()
"""What the SCP accepts: what the door takes (uncompressed, deflated, and the compressed
syntaxes an installed decoder reads — a PACS forwarding its JPEG-LS or JPEG 2000 archive sends
it as stored, without a lossy or costly conversion)."""


def _sender_for(ae_title: str, address: str) -> DicomSender | None:
    close_old_connections()
    sender = (
        DicomSender.objects.select_related("site")
        .filter(ae_title=ae_title.strip(), is_active=True)
        .first()
    )
    if sender is None:
        return None
    if not sender.accepts_from(address):
        if not sender.host and not sender.any_host:
            logger.warning(
                "association refused: sender %s has no host: register its address "
                "(manage.py dicom_sender SITE AE --host IP) or allow any (--any-host)",
                sender.ae_title,
            )
        return None
    return sender


def _on_requested(event: Any) -> None:
    requestor = event.assoc.requestor
    # The A-ASSOCIATE-RQ has arrived but is not yet copied into ``requestor.ae_title``.
    calling = requestor.primitive.calling_ae_title
    sender = _sender_for(str(calling or ""), requestor.address)
    if sender is None:
        logger.warning("association refused: unknown calling AE from %s", requestor.address)
        event.assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, service user, calling AE
        # As pynetdicom's own rejection does: let the DUL send the A-ASSOCIATE-RJ before the
        # socket closes, or the peer sees an abort instead of a rejection.
        event.assoc.kill()
        return
    event.assoc.artiscan_site = sender.site


def _usable_connection() -> None:
    """Keep the association's database connection from one C-STORE to the next (opening one
    per instance cost a connection set-up each, and on SQLite a WAL checkpoint at each close),
    unless an error left it unusable."""
    if connection.connection is not None and connection.errors_occurred:
        if connection.is_usable():
            connection.errors_occurred = False
        else:
            connection.close()


def _on_association_end(event: Any) -> None:
    # Runs on the association's own thread, whose connection this is.
    connection.close()


RECEIVE_SLACK = 2**20
"""Bytes beyond the instance size limit an association may send before its next dataset is
complete: PDU and command-set overhead."""


def _on_data(event: Any) -> None:
    """Bound what one association holds in memory. pynetdicom gathers a dataset's P-DATA in
    memory until the C-STORE request is complete, whatever its size; past the instance size
    limit (``ARTISCAN_MAX_INSTANCE_MB``) since the last dataset, the association is aborted —
    the door would refuse such a file anyway, and the sender learns it at once."""
    assoc = event.assoc
    received = getattr(assoc, "artiscan_received", 0) + len(event.data)
    assoc.artiscan_received = received
    if received > settings.ARTISCAN_MAX_INSTANCE_BYTES + RECEIVE_SLACK and not getattr(
        assoc, "artiscan_aborted", False
    ):
        assoc.artiscan_aborted = True
        logger.warning(
            "association from %s aborted: more than %d MiB without a complete dataset",
            assoc.requestor.address,
            settings.ARTISCAN_MAX_INSTANCE_BYTES // 2**20,
        )
        assoc.abort(block=False)


def _on_store(event: Any) -> int:
    event.assoc.artiscan_received = 0  # the dataset is complete: count the next one afresh
    site = getattr(event.assoc, "artiscan_site", None)
    if site is None:
        return CANNOT_UNDERSTAND
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, event.file_meta, enforce_standard=True)
    buffer.write(event.request.DataSet.getvalue())
    _usable_connection()
    try:
        outcome = instance_ingest(site=site, data=buffer.getvalue(), source="cstore")
    except StoreFull:
        return OUT_OF_RESOURCES  # the store is full (logged by the check): the sender retries
    except Exception:
        logger.exception("C-STORE ingest failed")
        return OUT_OF_RESOURCES  # transient: the sender retries
    if outcome.status == "rejected":
        return CANNOT_UNDERSTAND
    return SUCCESS


def build_ae(ae_title: str = "ARTISCAN") -> AE:
    ae = AE(ae_title=ae_title)
    ae.require_called_aet = True
    ae.maximum_pdu_size = 0
    for context in (MR_IMAGE_STORAGE, ENHANCED_MR_IMAGE_STORAGE):
        ae.add_supported_context(context, TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION)
    return ae


HANDLERS: list[Any] = [
    (evt.EVT_REQUESTED, _on_requested),
    (evt.EVT_DATA_RECV, _on_data),
    (evt.EVT_C_STORE, _on_store),
    (evt.EVT_RELEASED, _on_association_end),
    (evt.EVT_ABORTED, _on_association_end),
]


STOP_DEADLINE_S = 20.0
"""Seconds a multi-process SCP may take to stop once one of its processes died."""


def serve(*, host: str, port: int, ae_title: str, block: bool = True, processes: int = 1) -> Any:
    """Listen for associations; returns the server when ``block`` is false.

    With ``processes`` > 1 the listening socket is bound once and that many processes accept
    on it (one Python process de-identifies on one core at a time, whatever its threads): the
    kernel hands each association to one of them. If one dies, the others are stopped and the
    call returns its exit status, so a supervisor sees the failure.
    """
    ae = build_ae(ae_title)
    if processes <= 1:
        return ae.start_server((host, port), block=block, evt_handlers=HANDLERS)
    server = ae.make_server((host, port), ae_title=ae_title, evt_handlers=HANDLERS)
    connections.close_all()  # nothing of the database crosses fork()
    children = []
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child serves until it is stopped
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            try:
                server.serve_forever()
            finally:
                os._exit(1)
        children.append(pid)

    def stop(*_: Any) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def watch() -> None:
        _, status = os.wait()  # any child: a dead acceptor stops them all
        logger.error("a C-STORE SCP process exited (%s): stopping", status)
        stop()
        # Whatever might hang from here on (the server's shutdown, the interpreter's), this
        # process is gone within the deadline, so a supervisor sees the failure.
        deadline = threading.Timer(STOP_DEADLINE_S, os._exit, (1,))
        deadline.daemon = True
        deadline.start()
        server.shutdown()

    def terminate(*_: Any) -> None:
        stop()
        os._exit(0)

    signal.signal(signal.SIGTERM, terminate)
    threading.Thread(target=watch, daemon=True).start()
    try:
        server.serve_forever()
    finally:
        stop()
    return 1
