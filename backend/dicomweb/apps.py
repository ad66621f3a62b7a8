from django.apps import AppConfig


class DicomwebConfig(AppConfig):
    name = "backend.dicomweb"
    label = "dicomweb"
    verbose_name = "DICOMweb (STOW-RS, QIDO-RS, WADO-RS)"
