"""The Celery application: queues ``cpu`` and ``gpu``, JSON only, late acks.

All options live in Django settings under the ``CELERY_`` prefix (``backend/config/settings.py``).
Reliability choices (../shared/research/security-checklist.md, section 6): ``acks_late`` +
``task_reject_on_worker_lost`` so a killed worker's task is redelivered, the visibility timeout
set in every place Redis reads it, prefetch of one, and our own attempt counter
(``backend.jobs``) because Celery requeues a worker-lost task forever.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.config.settings")

app = Celery("artiscan")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _embedded_broker_polling(**_: object) -> None:
    """Only consumers poll: make the embedded (SQLAlchemy) broker's worker poll often."""
    from django.conf import settings

    poll = getattr(settings, "ARTISCAN_EMBEDDED_BROKER_POLL_S", None)
    if poll is not None and str(settings.CELERY_BROKER_URL).startswith("sqla+"):
        from kombu.transport.sqlalchemy import Transport

        Transport.polling_interval = poll
