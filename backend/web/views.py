from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache


@login_required
@never_cache
def home(request: HttpRequest) -> HttpResponse:
    memberships = request.user.memberships.select_related("site").order_by("site__name")
    return render(request, "web/home.html", {"memberships": memberships})


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
