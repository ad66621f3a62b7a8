"""Users, the sites they belong to and the role they hold at each site."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth.models import AbstractUser
from django.db import models


class Role(models.TextChoices):
    RADIOLOGIST = "radiologist", "Radiologist"
    OPERATOR = "operator", "MR operator"
    ANNOTATOR = "annotator", "Annotator"
    ANNOTATION_LEAD = "annotation_lead", "Annotation lead"
    SITE_ADMIN = "site_admin", "Site QA administrator"


class Site(models.Model):
    """A hospital or imaging centre: the unit of data isolation."""

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    """A person using ArtiScan. ``is_superuser`` sees every site; everyone else sees only the
    sites of their memberships."""

    sites = models.ManyToManyField(Site, through="Membership", related_name="users")
    # Password guessing: wrong passwords in a row, and the lock they earned
    # (backend/accounts/lockout.py; per account, so rotating addresses do not help).
    failed_logins = models.PositiveIntegerField(default=0)
    locked_until = models.DateTimeField(null=True, blank=True)


class Membership(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=32, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "site", "role"], name="membership_unique_role")
        ]
        indexes = [models.Index(fields=["site", "role"])]

    def __str__(self) -> str:
        return f"{self.user} @ {self.site} ({self.role})"


def _hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for the REST API and workstation clients. Only its SHA-256 is stored, so
    a copy of the database does not hand out working credentials."""

    PREFIX = "as_"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    key_prefix = models.CharField(max_length=12)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"

    @classmethod
    def new_key(cls) -> str:
        return cls.PREFIX + secrets.token_urlsafe(32)

    @staticmethod
    def hash_key(raw: str) -> str:
        return _hash_token(raw)
