"""Which backend the store uses, from the environment (read once per process).

``ARTISCAN_STORAGE`` is ``local`` (default: ``MEDIA_ROOT``, i.e. ``$ARTISCAN_VAR_DIR/store``) or
``s3``. For ``s3``:

- ``ARTISCAN_S3_BUCKET`` (required) and ``ARTISCAN_S3_PREFIX`` (optional, e.g. ``site-a/``);
- ``ARTISCAN_S3_ENDPOINT_URL``: the server, for anything but AWS itself (MinIO, Ceph RGW, ...);
- ``ARTISCAN_S3_REGION`` (default ``us-east-1``);
- ``ARTISCAN_S3_ACCESS_KEY_ID`` and ``ARTISCAN_S3_SECRET_ACCESS_KEY`` (each also as ``..._FILE``);
  when both are unset boto3's own chain applies (instance role, ``~/.aws``);
- ``ARTISCAN_S3_ADDRESSING_STYLE``: ``path`` (default, what self-hosted servers expect),
  ``virtual`` or ``auto``.

Objects are encrypted by us before they leave the process, whatever the server does at rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from django.core.exceptions import ImproperlyConfigured

from backend.config.env import env_choice, env_optional, env_str


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str
    endpoint_url: str | None
    region: str
    access_key_id: str | None
    secret_access_key: str | None
    addressing_style: str


@lru_cache(maxsize=1)
def storage_config() -> S3Config | None:
    """None for the local directory; the S3 settings otherwise. Tests that change the
    environment call ``storage_config.cache_clear()``."""
    if env_choice("ARTISCAN_STORAGE", "local", ("local", "s3")) == "local":
        return None
    prefix = env_optional("ARTISCAN_S3_PREFIX") or ""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    key_id = env_optional("ARTISCAN_S3_ACCESS_KEY_ID")
    secret = env_optional("ARTISCAN_S3_SECRET_ACCESS_KEY")
    if (key_id is None) != (secret is None):
        raise ImproperlyConfigured(
            "ARTISCAN_S3_ACCESS_KEY_ID and ARTISCAN_S3_SECRET_ACCESS_KEY: set both or neither."
        )
    return S3Config(
        bucket=env_str("ARTISCAN_S3_BUCKET"),
        prefix=prefix,
        endpoint_url=env_optional("ARTISCAN_S3_ENDPOINT_URL"),
        region=env_str("ARTISCAN_S3_REGION", "us-east-1"),
        access_key_id=key_id,
        secret_access_key=secret,
        addressing_style=env_choice(
            "ARTISCAN_S3_ADDRESSING_STYLE", "path", ("path", "virtual", "auto")
        ),
    )
