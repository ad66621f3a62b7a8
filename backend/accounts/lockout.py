"""Per-account lockout against password guessing (security checklist A-10).

Every way in that checks a password — the login page, the token endpoint, the admin — goes
through :func:`django.contrib.auth.authenticate`, so one backend and one receiver cover them:
``ARTISCAN_LOGIN_MAX_FAILURES`` wrong passwords in a row lock the account for
``ARTISCAN_LOGIN_LOCK_MINUTES``, whatever addresses they came from (DRF's per-address throttle on
the token endpoint alone, in each process's memory, did not stop a guesser with many addresses
or one that used the login page). While locked, even the right password is refused, and the
attempts are not counted (the lock is not extended by them). A successful login clears the count.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_login_failed
from django.db import transaction
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from backend.accounts.models import User

logger = logging.getLogger(__name__)


def is_locked(user: Any) -> bool:
    until = getattr(user, "locked_until", None)
    return until is not None and until > timezone.now()


class LockoutModelBackend(ModelBackend):
    """Django's model backend that refuses a locked account and clears the count on success."""

    def user_can_authenticate(self, user: Any) -> bool:
        return bool(super().user_can_authenticate(user)) and not is_locked(user)

    def get_user(self, user_id: Any) -> Any:
        """The user of a session: a lock refuses password logins only. A session opened before
        it stays open — otherwise anyone who knows a username could sign a radiologist out in
        mid-read, every fifteen minutes, by typing wrong passwords."""
        user = User._default_manager.filter(pk=user_id).first()
        return user if user is not None and super().user_can_authenticate(user) else None

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None and user.failed_logins:
            User.objects.filter(pk=user.pk).update(failed_logins=0)
        return user


@receiver(user_login_failed)
def count_failure(sender: Any, credentials: dict[str, Any], **kwargs: Any) -> None:
    username = credentials.get("username")
    if not isinstance(username, str) or not username:
        return
    with transaction.atomic():
        user = User.objects.select_for_update().filter(username=username).first()
        if user is None or is_locked(user):
            return
        user.failed_logins += 1
        if user.failed_logins >= settings.ARTISCAN_LOGIN_MAX_FAILURES:
            minutes = settings.ARTISCAN_LOGIN_LOCK_MINUTES
            user.locked_until = timezone.now() + timedelta(minutes=minutes)
            user.failed_logins = 0
            logger.warning("account %s locked for %d min after wrong passwords", user.pk, minutes)
        user.save(update_fields=["failed_logins", "locked_until"])
