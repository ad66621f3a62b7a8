from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "backend.jobs"
    label = "jobs"

    def ready(self) -> None:
        from django.core.signals import request_finished

        from backend.config.connections import forget_handled_errors

        request_finished.connect(forget_handled_errors, dispatch_uid="artiscan-forget-db-errors")
