"""The admin app with the installation's own site (``backend.config.admin.ArtiScanAdminSite``:
superusers only, reads audited). Kept apart from the site: an app's config is imported before
the models are loaded, and the site imports the audit trail's."""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class ArtiScanAdminConfig(AdminConfig):
    default_site = "backend.config.admin.ArtiScanAdminSite"
