"""A local directory of encrypted files, addressed by storage keys like
``instances/<site>/<study uid>/<series uid>/<sop uid>.dcm``.

Writes are atomic (temporary file + rename), files are private to the service user, and keys are
checked so that nothing from a DICOM header can walk out of the store's root.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from backend.storage.crypto import Keyring, KeyringError, decrypt, encrypt, key_id_of

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class StorageKeyError(ValueError):
    pass


@lru_cache(maxsize=4)
def _parse_keyring(spec: str) -> Keyring:
    try:
        return Keyring.parse(spec)
    except KeyringError as exc:
        raise ImproperlyConfigured(f"ARTISCAN_STORAGE_KEYS: {exc}") from None


def keyring() -> Keyring:
    return _parse_keyring(settings.STORAGE_KEYS)


def root() -> Path:
    return Path(settings.MEDIA_ROOT)


def _path(key: str) -> Path:
    if not _SAFE_KEY.fullmatch(key) or ".." in key.split("/") or len(key) > 255:
        raise StorageKeyError(f"unsafe storage key {key!r}")
    return root() / key


def store_put(key: str, data: bytes) -> int:
    """Encrypt and write ``data`` under ``key``; returns the bytes written."""
    path = _path(key)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    blob = encrypt(data, keyring=keyring(), associated=key.encode())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(blob)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(blob)


def store_get(key: str) -> bytes:
    return decrypt(_path(key).read_bytes(), keyring=keyring(), associated=key.encode())


def store_exists(key: str) -> bool:
    return _path(key).is_file()


def store_delete(key: str) -> None:
    _path(key).unlink(missing_ok=True)


def store_key_id(key: str) -> str:
    """The id of the encryption key a stored file was written with."""
    with open(_path(key), "rb") as f:
        return key_id_of(f.read(64))


def store_keys(prefix: str = "") -> Iterator[str]:
    base = root()
    start = base / prefix if prefix else base
    if not start.exists():
        return
    for dirpath, _dirs, files in os.walk(start):
        for name in files:
            if not name.startswith(".tmp-"):
                yield str((Path(dirpath) / name).relative_to(base))


def store_reencrypt(key: str) -> bool:
    """Re-encrypt one file with the current key; False if it already was."""
    if store_key_id(key) == keyring().current_id:
        return False
    store_put(key, store_get(key))
    return True
