"""``/ohif/``: see ``backend/dicomweb/ohif.py``; no route at all unless it is enabled."""

from django.urls import path, re_path

from backend.dicomweb.ohif import ohif_enabled, ohif_file

urlpatterns = (
    [
        path("ohif/", ohif_file, name="ohif"),
        re_path(r"^ohif/(?P<path>.+)$", ohif_file, name="ohif-file"),
    ]
    if ohif_enabled()
    else []
)
