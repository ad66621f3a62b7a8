"""Reads about who may see what. Every clinical query is scoped through ``site_ids_for``."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.utils import timezone

from backend.accounts.models import ApiToken, Membership, Role, Site, User

AnyUser = User | AnonymousUser


def site_ids_for(user: AnyUser) -> set[int]:
    """The ids of the sites whose clinical data ``user`` may see (every site for a superuser)."""
    if not user.is_authenticated or not user.is_active:
        return set()
    if user.is_superuser:
        return set(Site.objects.values_list("id", flat=True))
    return set(Membership.objects.filter(user=user).values_list("site_id", flat=True))


def site_list(*, user: AnyUser) -> QuerySet[Site]:
    return Site.objects.filter(id__in=site_ids_for(user)).order_by("name")


def roles_for(*, user: AnyUser, site_id: int) -> set[str]:
    if not user.is_authenticated:
        return set()
    return set(Membership.objects.filter(user=user, site_id=site_id).values_list("role", flat=True))


def user_has_role(*, user: AnyUser, site_id: int, roles: Iterable[Role]) -> bool:
    if user.is_authenticated and user.is_superuser:
        return True
    return bool(roles_for(user=user, site_id=site_id) & {str(r) for r in roles})


def site_ids_with_role(*, user: AnyUser, roles: Iterable[Role]) -> set[int]:
    if not user.is_authenticated:
        return set()
    if user.is_superuser:
        return site_ids_for(user)
    return set(
        Membership.objects.filter(user=user, role__in=[str(r) for r in roles]).values_list(
            "site_id", flat=True
        )
    )


def token_get_active(*, raw_key: str) -> ApiToken | None:
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=ApiToken.hash_key(raw_key), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    if token.expires_at is not None and token.expires_at <= timezone.now():
        return None
    return token


SENDING_ROLES = (Role.OPERATOR, Role.RADIOLOGIST, Role.SITE_ADMIN)


def sending_site_for(*, user: AnyUser, requested: str | None) -> Site | None:
    """The site a sender's images go to: the one named (id or slug) if the caller may send there,
    else the caller's only sending site; None when that is ambiguous or not allowed.

    One query (it runs on every STOW-RS request): the sites the caller may send to, filtered."""
    if not user.is_authenticated or not user.is_active:
        return None
    sites = Site.objects.all()
    if not user.is_superuser:
        sites = sites.filter(
            memberships__user=user, memberships__role__in=[str(r) for r in SENDING_ROLES]
        ).distinct()
    if requested:
        lookup = {"id": int(requested)} if requested.isdigit() else {"slug": requested}
        return sites.filter(**lookup).first()
    found = list(sites.order_by("id")[:2])
    return found[0] if len(found) == 1 else None
