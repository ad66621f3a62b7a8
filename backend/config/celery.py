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

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.config.settings")

app = Celery("artiscan")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
