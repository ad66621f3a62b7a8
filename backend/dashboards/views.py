from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie

from backend.dashboards.selectors import qa_site_list
from backend.dashboards.services import ARTIFACT_TYPES


@login_required
@never_cache
@ensure_csrf_cookie
def dashboard(request: HttpRequest) -> HttpResponse:
    """The QA dashboard page; its numbers come from /api/dashboards/ (scoped there)."""
    context = {"sites": qa_site_list(user=request.user), "artifact_types": ARTIFACT_TYPES}
    return render(request, "dashboards/dashboard.html", context)
