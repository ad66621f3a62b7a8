"""The installation's accounts in the admin (superusers only, ``backend.config.admin``): sites,
users with their memberships (site and role), and API tokens.

What an installation's superuser needs to run it: onboard a site and its people, end a departed
user's membership or account, lift a lock that wrong passwords earned, and revoke a token that
went astray (only its SHA-256 is stored: a token is made through ``POST /api/auth/token/``, never
here, and cannot be read back)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from backend.accounts.models import ApiToken, Membership, Site, User


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    fields = ("site", "role", "created_at")
    readonly_fields = ("created_at",)


def _revoke(queryset: QuerySet[ApiToken]) -> int:
    return queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    inlines = (MembershipInline,)
    list_display = ("username", "is_active", "is_superuser", "site_roles", "locked_until")
    list_filter = ("is_active", "is_superuser", "memberships__site", "memberships__role")
    fieldsets = (
        *(DjangoUserAdmin.fieldsets or ()),
        ("Password guessing", {"fields": ("failed_logins", "locked_until")}),
    )
    readonly_fields = ("failed_logins", "last_login", "date_joined")
    actions = ("unlock", "revoke_tokens")

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> Any:
        # The add page is Django's two-password form; memberships come on the next page.
        return self.inlines if obj is not None else ()

    @admin.display(description="sites and roles")
    def site_roles(self, user: User) -> str:
        return ", ".join(
            f"{m.site.slug}: {m.role}" for m in user.memberships.select_related("site")
        )

    @admin.action(description="Lift the lock of wrong passwords")
    def unlock(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        n = queryset.update(locked_until=None, failed_logins=0)
        self.message_user(request, f"{n} account(s) unlocked.", messages.SUCCESS)

    @admin.action(description="Revoke all their API tokens")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        n = _revoke(ApiToken.objects.filter(user__in=queryset))
        self.message_user(request, f"{n} token(s) revoked.", messages.SUCCESS)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "key_prefix", "created_at", "last_used_at", "expires_at",
                    "revoked_at")  # fmt: skip
    list_filter = ("revoked_at",)
    search_fields = ("user__username", "name", "key_prefix")
    readonly_fields = ("user", "name", "key_prefix", "created_at", "last_used_at", "expires_at",
                       "revoked_at")  # fmt: skip
    exclude = ("key_hash",)
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # made by POST /api/auth/token/: the raw token is shown once, to its owner

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        n = _revoke(queryset)
        self.message_user(request, f"{n} token(s) revoked.", messages.SUCCESS)
