from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "backend.review"
    label = "review"
    verbose_name = "Radiologists' review of findings and series"
