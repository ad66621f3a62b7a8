"""Encrypted files addressed by storage keys like
``instances/<site>/<study uid>/<series uid>/<sop uid>.dcm``, on one of two backends:

- ``local`` (default): a directory (``MEDIA_ROOT``); writes are atomic (temporary file + fsync +
  rename), files are private to the service user.
- ``s3``: a bucket of any S3-compatible server (``ARTISCAN_STORAGE=s3``, see ``conf.py``); an
  object exists only once the server has answered the PUT, which is its durability promise.

Either way the bytes are the same AES-GCM envelope (``crypto.py``) with the key as associated
data, and keys are checked so that nothing from a DICOM header can walk out of the store's root.
"""

from __future__ import annotations

import ctypes
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from backend.storage.conf import S3Config, storage_config
from backend.storage.crypto import Keyring, KeyringError, decrypt, encrypt, key_id_of

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
_HEADER_BYTES = 64  # enough for the envelope's magic and key id


class StorageKeyError(ValueError):
    pass


class Backend(Protocol):
    def write(self, key: str, blob: bytes) -> None: ...
    def write_many(self, items: Sequence[tuple[str, bytes]]) -> None: ...
    def read(self, key: str) -> bytes: ...
    def head(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str) -> Iterator[str]: ...


class LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, key: str, blob: bytes) -> None:
        """Write one file durably: its bytes synced, then renamed into place and the rename
        synced too (its directory; the whole filesystem when directories were made for it, as
        their own entries must last as well)."""
        path = self.root / key
        made_directories = not path.parent.is_dir()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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
        if made_directories:
            _sync_files([str(path)], self.root)
        else:
            _fsync_directory(str(path.parent))

    def write_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write every file, make them all durable with one filesystem sync, then rename them
        into place and sync again so the renames are durable too: two journal commits per batch
        instead of one per file, and still nothing returns before the bytes are on disk."""
        pending: list[tuple[str, Path]] = []
        try:
            for key, blob in items:
                path = self.root / key
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
                pending.append((tmp, path))
                with os.fdopen(fd, "wb") as out:
                    out.write(blob)
            _sync_files([tmp for tmp, _ in pending], self.root)
            for tmp, path in pending:
                os.replace(tmp, path)
            _sync_files([str(path) for _, path in pending], self.root)
        except BaseException:
            for tmp, _ in pending:
                Path(tmp).unlink(missing_ok=True)
            raise

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def head(self, key: str) -> bytes:
        with open(self.root / key, "rb") as f:
            return f.read(_HEADER_BYTES)

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> Iterator[str]:
        start = self.root / prefix if prefix else self.root
        if not start.exists():
            return
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if not name.startswith(".tmp-"):
                    yield str((Path(dirpath) / name).relative_to(self.root))


class S3Backend:
    """One bucket (optionally under a prefix) of an S3-compatible server, through boto3."""

    def __init__(self, config: S3Config) -> None:
        import boto3  # only deployments that choose S3 pay for importing it
        from botocore.config import Config

        self.bucket = config.bucket
        self.prefix = config.prefix
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"},
                s3={"addressing_style": config.addressing_style},
                max_pool_connections=16,
            ),
        )
        from botocore.exceptions import ClientError

        self._client_error = ClientError

    def _name(self, key: str) -> str:
        return self.prefix + key

    def _missing(self, exc: Exception) -> bool:
        error = getattr(exc, "response", {}).get("Error", {})
        return str(error.get("Code")) in {"404", "NoSuchKey", "NotFound"}

    def write(self, key: str, blob: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=blob)

    def write_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Concurrent PUTs (the pool size of the client); returns when every one succeeded."""
        if len(items) <= 1:
            for key, blob in items:
                self.write(key, blob)
            return
        with ThreadPoolExecutor(min(8, len(items))) as pool:
            for future in [pool.submit(self.write, key, blob) for key, blob in items]:
                future.result()

    def read(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        except self._client_error as exc:
            if self._missing(exc):
                raise FileNotFoundError(key) from None
            raise
        return bytes(response["Body"].read())

    def head(self, key: str) -> bytes:
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._name(key), Range=f"bytes=0-{_HEADER_BYTES - 1}"
            )
        except self._client_error as exc:
            if self._missing(exc):
                raise FileNotFoundError(key) from None
            raise
        return bytes(response["Body"].read())

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except self._client_error as exc:
            if self._missing(exc):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def keys(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._name(prefix)):
            for item in page.get("Contents", []):
                yield str(item["Key"])[len(self.prefix) :]


def _syncfs() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):  # not Linux/glibc: fsync file by file instead
        return None


_SYNCFS = _syncfs()


def _sync_files(paths: Sequence[str], root: Path) -> None:
    """Make ``paths`` (files under ``root``, renames included) durable: one ``syncfs`` of the
    store's filesystem where the C library has it, else an fsync of each file and directory."""
    if _SYNCFS is not None:
        fd = os.open(root, os.O_RDONLY)
        try:
            if _SYNCFS(fd) == 0:
                return
        finally:
            os.close(fd)
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for directory in {os.path.dirname(p) for p in paths}:
        _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


@lru_cache(maxsize=4)
def _s3_backend(config: S3Config) -> S3Backend:
    return S3Backend(config)


def backend() -> Backend:
    """The configured backend; the S3 client is made once per configuration and process."""
    config = storage_config()
    if config is None:
        return LocalBackend(root())
    return _s3_backend(config)


def _checked(key: str) -> str:
    if not _SAFE_KEY.fullmatch(key) or ".." in key.split("/") or len(key) > 255:
        raise StorageKeyError(f"unsafe storage key {key!r}")
    return key


def store_put(key: str, data: bytes) -> int:
    """Encrypt and write ``data`` under ``key``; returns the bytes written. Returns only once
    the bytes are durable (fsync'ed locally, acknowledged by the S3 server)."""
    blob = encrypt(data, keyring=keyring(), associated=_checked(key).encode())
    backend().write(key, blob)
    return len(blob)


def store_put_many(items: Sequence[tuple[str, bytes]]) -> list[int]:
    """``store_put`` for a batch: every file is durable when this returns (one sync for the
    batch on the local backend, concurrent PUTs on S3); returns the bytes written per file.
    On an error, files of the batch may or may not exist; nothing else is touched."""
    ring = keyring()
    sealed = [
        (key, encrypt(data, keyring=ring, associated=_checked(key).encode())) for key, data in items
    ]
    if len(sealed) == 1:
        backend().write(*sealed[0])  # one fsync beats a filesystem-wide sync for a single file
    else:
        backend().write_many(sealed)
    return [len(blob) for _, blob in sealed]


class PendingWrites:
    """Files being written and synced on a thread (:func:`store_put_many_started`)."""

    def __init__(self, sizes: list[int], future: Future[None]) -> None:
        self.sizes = sizes
        self._future = future

    def wait(self) -> None:
        """Return once every file is durable; raise the write's error if it failed."""
        self._future.result()


_writers: tuple[int, ThreadPoolExecutor] | None = None
_writers_lock = threading.Lock()


def _writer_pool() -> ThreadPoolExecutor:
    global _writers
    with _writers_lock:
        if _writers is None or _writers[0] != os.getpid():  # none of a parent's threads
            _writers = (os.getpid(), ThreadPoolExecutor(4, thread_name_prefix="artiscan-store"))
        return _writers[1]


def store_put_many_started(items: Sequence[tuple[str, bytes]]) -> PendingWrites:
    """:func:`store_put_many` with the writing and the disk syncs on a thread: the files are
    encrypted when this returns (``sizes`` known), durable when ``wait()`` returns. The caller
    does its other work (its database rows) while the disk syncs, and waits before it commits."""
    ring = keyring()
    sealed = [
        (key, encrypt(data, keyring=ring, associated=_checked(key).encode())) for key, data in items
    ]
    target = backend()

    def write() -> None:
        if len(sealed) == 1:
            target.write(*sealed[0])
        elif sealed:
            target.write_many(sealed)

    return PendingWrites([len(blob) for _, blob in sealed], _writer_pool().submit(write))


def store_get(key: str) -> bytes:
    return decrypt(backend().read(_checked(key)), keyring=keyring(), associated=key.encode())


def store_exists(key: str) -> bool:
    return backend().exists(_checked(key))


def store_delete(key: str) -> None:
    backend().delete(_checked(key))


def store_key_id(key: str) -> str:
    """The id of the encryption key a stored file was written with."""
    return key_id_of(backend().head(_checked(key)))


def store_keys(prefix: str = "") -> Iterator[str]:
    return backend().keys(prefix)


def store_reencrypt(key: str) -> bool:
    """Re-encrypt one file with the current key; False if it already was."""
    if store_key_id(key) == keyring().current_id:
        return False
    store_put(key, store_get(key))
    return True
