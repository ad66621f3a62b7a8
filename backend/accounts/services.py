"""Writes for users, memberships and API tokens."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from backend.accounts.models import ApiToken, Membership, Role, Site, User


def site_create(*, name: str, slug: str) -> Site:
    return Site.objects.create(name=name, slug=slug)


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str | None,
    memberships: list[tuple[Site, Role]] = [],  # noqa: B006 - never mutated
    is_superuser: bool = False,
    email: str = "",
) -> User:
    user = User(username=username, email=email, is_superuser=is_superuser, is_staff=is_superuser)
    if password is None:
        user.set_unusable_password()
    else:
        user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    for site, role in memberships:
        Membership.objects.create(user=user, site=site, role=role)
    return user


def token_create(
    *, user: User, name: str, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """Create a bearer token; the raw key is returned once and never stored."""
    raw = ApiToken.new_key()
    token = ApiToken.objects.create(
        user=user,
        name=name,
        key_hash=ApiToken.hash_key(raw),
        key_prefix=raw[:10],
        expires_at=expires_at,
    )
    return token, raw


def token_revoke(*, token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])


def token_touch(*, token: ApiToken) -> None:
    now = timezone.now()
    # One write per minute at most: a busy workstation must not turn every GET into a write.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
