from django.apps import AppConfig


class ScoringConfig(AppConfig):
    name = "backend.scoring"
    label = "scoring"
