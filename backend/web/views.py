from typing import cast

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from backend.accounts.models import Membership, User
from backend.accounts.selectors import SENDING_ROLES, site_ids_with_role, site_list


@login_required
@never_cache
def home(request: HttpRequest) -> HttpResponse:
    memberships = Membership.objects.filter(user=cast(User, request.user)).select_related("site")
    memberships = memberships.order_by("site__name", "role")
    return render(request, "web/home.html", {"memberships": memberships})


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@login_required
@never_cache
def upload(request: HttpRequest) -> HttpResponse:
    sites = site_list(user=request.user).filter(
        id__in=site_ids_with_role(user=request.user, roles=SENDING_ROLES)
    )
    return render(request, "web/upload.html", {"sites": sites})
