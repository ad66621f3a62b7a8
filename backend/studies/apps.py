from django.apps import AppConfig


class StudiesConfig(AppConfig):
    name = "backend.studies"
    label = "studies"
