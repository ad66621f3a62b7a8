"""Reads about who may see what. Every clinical query is scoped through ``site_ids_for``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.utils import timezone

from backend.accounts.models import ApiToken, Membership, Role, Site, User
from backend.config.prepared import PreparedQuery, field_names, instance_from

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


# Every request with a bearer token and every STOW-RS runs these two: compiled once
# (backend.config.prepared), not rebuilt by the ORM each time.
_TOKEN_COLUMNS = field_names(ApiToken)
_ACTIVE_TOKEN = PreparedQuery(
    lambda key_hash: (
        ApiToken.objects.filter(key_hash=key_hash, revoked_at__isnull=True)
        .order_by()
        .values_list(*_TOKEN_COLUMNS, *field_names(User, "user__"))[:1]
    ),
    str,
)
_MEMBERSHIP_COLUMNS = ["site_id", "role"]
_MEMBERSHIPS = PreparedQuery(
    lambda user_id: (
        Membership.objects.filter(user_id=user_id)
        .order_by("pk")
        .values_list(*_MEMBERSHIP_COLUMNS, *field_names(Site, "site__"))
    ),
    int,
)


def token_get_active(*, raw_key: str) -> ApiToken | None:
    """The token of ``raw_key`` with its user, if it is neither revoked nor expired and its
    user is active. One query."""
    row = _ACTIVE_TOKEN.first(ApiToken.hash_key(raw_key))
    if row is None:
        return None
    token = instance_from(ApiToken, row[: len(_TOKEN_COLUMNS)])
    user = instance_from(User, row[len(_TOKEN_COLUMNS) :])
    if not user.is_active:
        return None
    if token.expires_at is not None and token.expires_at <= timezone.now():
        return None
    token.user = user
    return token


SENDING_ROLES = (Role.OPERATOR, Role.RADIOLOGIST, Role.SITE_ADMIN)


@dataclass(frozen=True)
class Sender:
    """Who sends images where: the site they go to (None when the caller may not send, or
    sends for several sites and named none) and the caller's roles per site id, as the audit
    records them."""

    site: Site | None
    roles_by_site: dict[int, list[str]] = field(default_factory=dict)


def sender_for(*, user: AnyUser, requested: str | None) -> Sender:
    """The site a sender's images go to: the one named (id or slug) if the caller may send there,
    else the caller's only sending site; and the caller's roles, for the audit rows.

    One query for a member (it runs on every STOW-RS request): the caller's memberships with
    their sites; a superuser's sites need a second."""
    if not user.is_authenticated or not user.is_active:
        return Sender(None)
    roles_by_site: dict[int, list[str]] = {}
    sending: dict[int, Site] = {}
    sending_roles = {str(r) for r in SENDING_ROLES}
    for site_id, role, *site_row in _MEMBERSHIPS.rows(user.pk):
        roles_by_site.setdefault(site_id, []).append(role)
        if role in sending_roles and site_id not in sending:
            sending[site_id] = instance_from(Site, site_row)
    if user.is_superuser:
        sites = Site.objects.all()
        if requested:
            number = _site_number(requested)
            lookup = {"id": number} if number is not None else {"slug": requested}
            return Sender(sites.filter(**lookup).first(), roles_by_site)
        found = list(sites.order_by("id")[:2])
        return Sender(found[0] if len(found) == 1 else None, roles_by_site)
    if requested:
        number = _site_number(requested)
        chosen = [
            site
            for site in sending.values()
            if (site.pk == number if number is not None else site.slug == requested)
        ]
        return Sender(chosen[0] if chosen else None, roles_by_site)
    return Sender(next(iter(sending.values())) if len(sending) == 1 else None, roles_by_site)


def _site_number(requested: str) -> int | None:
    """A site named by its id: ASCII digits only ("²" is a digit to ``str.isdigit`` but not to
    ``int``) and no longer than a database key can be; anything else is a slug."""
    if requested.isascii() and requested.isdigit() and len(requested) <= 18:
        return int(requested)
    return None


def sending_site_for(*, user: AnyUser, requested: str | None) -> Site | None:
    """``sender_for``'s site."""
    return sender_for(user=user, requested=requested).site
