"""The C-STORE SCP (pynetdicom): modalities and PACS push MR images; each one goes through
``instance_ingest`` like every other way in.

Associations are accepted only from the AE titles (and hosts) registered as ``DicomSender``; the
rest are rejected with "calling AE title not recognised" before any data arrives.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import close_old_connections
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, evt

from backend.ingest.models import DicomSender
from backend.ingest.services import instance_ingest

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
VERIFICATION = "1.2.840.10008.1.1"
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless
]


def _sender_for(ae_title: str, address: str) -> DicomSender | None:
    close_old_connections()
    sender = (
        DicomSender.objects.select_related("site")
        .filter(ae_title=ae_title.strip(), is_active=True)
        .first()
    )
    if sender is None or (sender.host and sender.host != address):
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


def _on_store(event: Any) -> int:
    site = getattr(event.assoc, "artiscan_site", None)
    if site is None:
        return CANNOT_UNDERSTAND
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, event.file_meta, enforce_standard=True)
    buffer.write(event.request.DataSet.getvalue())
    close_old_connections()
    try:
        outcome = instance_ingest(site=site, data=buffer.getvalue(), source="cstore")
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


HANDLERS: list[Any] = [(evt.EVT_REQUESTED, _on_requested), (evt.EVT_C_STORE, _on_store)]


def serve(*, host: str, port: int, ae_title: str, block: bool = True) -> Any:
    """Listen for associations; returns the server when ``block`` is false."""
    ae = build_ae(ae_title)
    return ae.start_server((host, port), block=block, evt_handlers=HANDLERS)
