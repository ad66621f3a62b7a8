from __future__ import annotations

from celery import shared_task

from backend.dashboards.notify import NotifyError
from backend.dashboards.services import alert_notify, rollups_refresh
from backend.jobs.tasks import TRANSIENT_ERRORS, TrackedTask


@shared_task(base=TrackedTask, autoretry_for=TRANSIENT_ERRORS, retry_backoff=True, max_retries=3)
def dashboards_refresh_task() -> int:
    """Periodic (Celery beat, ``CELERY_BEAT_SCHEDULE``): roll up what was scored since last time."""
    return rollups_refresh().cells


@shared_task(
    base=TrackedTask,
    autoretry_for=(NotifyError, *TRANSIENT_ERRORS),
    retry_backoff=30,
    max_retries=6,
)
def alert_notify_task(alert_id: int) -> None:
    alert_notify(alert_id=alert_id)


@shared_task(
    ignore_result=True, autoretry_for=TRANSIENT_ERRORS, max_retries=3, acks_on_timeout=True
)
def access_alerts_task() -> int:
    """Periodic (Celery beat, ``CELERY_BEAT_SCHEDULE``): raise an access alert for each burst of
    denied attempts on a site (``access.access_alerts_evaluate``)."""
    from backend.dashboards.access import access_alerts_evaluate

    return len(access_alerts_evaluate())


@shared_task(
    base=TrackedTask,
    autoretry_for=(NotifyError, *TRANSIENT_ERRORS),
    retry_backoff=30,
    max_retries=6,
)
def access_alert_notify_task(alert_id: int) -> None:
    from backend.dashboards.access import access_alert_notify

    access_alert_notify(alert_id=alert_id)
