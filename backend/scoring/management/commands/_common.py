from __future__ import annotations

from django.core.management.base import CommandError

from backend.accounts.models import User


def acting_user(username: str | None) -> User | None:
    if not username:
        return None
    user = User.objects.filter(username=username, is_active=True).first()
    if user is None:
        raise CommandError(f"no active user {username!r}")
    return user
