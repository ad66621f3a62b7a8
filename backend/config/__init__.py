"""Django project configuration; importing it makes the Celery app current for ``shared_task``."""

from backend.config.celery import app as celery_app

__all__ = ["celery_app"]
