"""Authentication and identity endpoints."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from django.contrib.auth import authenticate
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from backend.accounts.authentication import BearerTokenAuthentication
from backend.accounts.models import ApiToken, Membership, User
from backend.accounts.selectors import site_list
from backend.accounts.serializers import (
    MeOutputSerializer,
    SiteOutputSerializer,
    TokenCreateInputSerializer,
    TokenCreateOutputSerializer,
)
from backend.accounts.services import token_create, token_revoke


class LoginThrottle(AnonRateThrottle):
    scope = "login"
    rate = "20/min"


class TokenCreateApi(APIView):
    """Exchange a username and password for a bearer token (workstations, scripts)."""

    # No session auth (and so no CSRF check) here; listed so a failure answers 401, not 403.
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [AllowAny]
    throttle_classes = [LoginThrottle]
    TOKEN_LIFETIME = timedelta(days=90)

    @extend_schema(request=TokenCreateInputSerializer, responses={201: TokenCreateOutputSerializer})
    def post(self, request: Request) -> Response:
        data = TokenCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(
            request,
            username=data.validated_data["username"],
            password=data.validated_data["password"],
        )
        if user is None:
            raise exceptions.AuthenticationFailed("Wrong username or password.")
        token, raw = token_create(
            user=user,
            name=data.validated_data["name"],
            expires_at=timezone.now() + self.TOKEN_LIFETIME,
        )
        out = {"token": raw, "prefix": token.key_prefix, "expires_at": token.expires_at}
        return Response(TokenCreateOutputSerializer(out).data, status=status.HTTP_201_CREATED)


class TokenRevokeApi(APIView):
    """Revoke the token this request was made with."""

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request) -> Response:
        if not isinstance(request.auth, ApiToken):
            raise exceptions.ValidationError("This request was not made with a bearer token.")
        token_revoke(token=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    @extend_schema(responses=MeOutputSerializer)
    def get(self, request: Request) -> Response:
        user = request.user
        memberships = Membership.objects.filter(user=cast(User, user)).select_related("site")
        memberships = memberships.order_by("site__name", "role")
        out = {
            "id": user.pk,
            "username": user.get_username(),
            "is_superuser": user.is_superuser,
            "memberships": memberships,
        }
        return Response(MeOutputSerializer(out).data)


class SiteListApi(APIView):
    @extend_schema(responses=SiteOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(SiteOutputSerializer(site_list(user=request.user), many=True).data)
