from django.apps import AppConfig


class DeidConfig(AppConfig):
    name = "backend.deid"
    label = "deid"
    verbose_name = "De-identification"
