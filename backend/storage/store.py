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
import errno
import logging
import os
import queue
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from backend.storage.conf import S3Config, storage_config
from backend.storage.crypto import (
    Keyring,
    KeyringError,
    decrypt,
    encrypt,
    key_id_of,
    seal_into,
    sealed_size,
)

logger = logging.getLogger(__name__)

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
_HEADER_BYTES = 64  # enough for the envelope's magic and key id


# What a backend writes: an encrypted file (``crypto.encrypt`` makes it in a bytearray; a
# writer that reuses one buffer hands over a view of it, ``crypto.seal_into``).
Blob = bytes | bytearray | memoryview


class StorageKeyError(ValueError):
    pass


class Backend(Protocol):
    # True when ``write_owned`` is done with each blob before it asks for the next one, so
    # the blobs may all be one reused buffer (``OwnedWrites``).
    writes_one_at_a_time: bool

    def write(self, key: str, blob: Blob) -> None: ...
    def write_many(self, items: Sequence[tuple[str, Blob]]) -> None: ...
    def write_owned(self, items: Iterable[tuple[str, Blob]]) -> None: ...
    def read(self, key: str) -> bytes: ...
    def head(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str) -> Iterator[str]: ...


class LocalBackend:
    writes_one_at_a_time = True  # write_owned writes each file before it takes the next

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, key: str, blob: Blob) -> None:
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

    def write_many(self, items: Sequence[tuple[str, Blob]]) -> None:
        """Write every file, make them all durable with one filesystem sync, then rename them
        into place and sync again so the renames are durable too: two journal commits per batch
        instead of one per file, and still nothing returns before the bytes are on disk. For
        keys no one else may be writing, :meth:`write_owned` needs one sync instead of two."""
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

    def write_owned(self, items: Iterable[tuple[str, Blob]]) -> None:
        """Write every file straight at its key and make them all durable with one sync (shared
        with the other writers of this process that sync at the same time: :class:`GroupSync`).

        Only for keys the caller owns: no other writer writes them meanwhile, and nothing reads
        them, nor points at them durably, before this returns (the ingest door holds the row of
        each instance, uncommitted, while it writes its file; ``backend.ingest.services``). A
        crash before the sync may leave a key with partial bytes, which nothing points at and
        the next writer of that key replaces, so there is no temporary file to rename and the
        data need not be durable before a rename: one sync instead of two."""
        written: list[str] = []
        for key, blob in items:
            path = self.root / key
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            written.append(str(path))
            with os.fdopen(fd, "wb") as out:
                out.write(blob)
        if written:
            _sync_files(written, self.root)

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

    writes_one_at_a_time = False  # write_owned collects the blobs for concurrent PUTs

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

    def write(self, key: str, blob: Blob) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=blob)

    def write_many(self, items: Sequence[tuple[str, Blob]]) -> None:
        """Concurrent PUTs (the pool size of the client); returns when every one succeeded."""
        if len(items) <= 1:
            for key, blob in items:
                self.write(key, blob)
            return
        with ThreadPoolExecutor(min(8, len(items))) as pool:
            for future in [pool.submit(self.write, key, blob) for key, blob in items]:
                future.result()

    def write_owned(self, items: Iterable[tuple[str, Blob]]) -> None:
        self.write_many(list(items))  # an object exists only once its PUT is answered

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


class GroupSync:
    """One ``syncfs`` shared by every thread of this process that needs the store's filesystem
    synced at the same time (group commit).

    A caller's files are written before it calls :meth:`sync`, so any sync that *starts* after
    the call covers them; one already running may have started before they were written and
    covers nothing of theirs. So a caller that finds a sync running waits for it to end, then
    for the next one, which the first of the waiters starts for them all: N concurrent batches
    pay about two syncs' time and one sync's disk work instead of N. A failed sync fails
    everyone waiting while it ran (each raises ``OSError``); nobody returns on a sync that
    did not succeed."""

    def __init__(self, root: Path, syncfs: Any) -> None:
        self.root = root
        self._syncfs = syncfs
        self._cond = threading.Condition()
        self._started = 0  # syncs started so far
        self._done = 0  # the last sync that succeeded, by its number
        self._failures = 0  # syncs that failed
        self._errno = 0  # the last failure's
        self._running = False
        self.syncs = 0  # syncs run (tests read it)
        self.waiting = 0  # callers waiting for a sync to end (tests read it)

    def sync(self) -> None:
        with self._cond:
            wanted = self._started + 1  # the first sync that starts after this call
            failures = self._failures
            while self._done < wanted:
                if self._failures != failures:
                    # A sync failed while these files waited: their pages may have been among
                    # those it could not write, and a later sync would not report it.
                    raise OSError(self._errno, "syncfs of the store failed")
                if self._running:
                    self.waiting += 1
                    try:
                        self._cond.wait()
                    finally:
                        self.waiting -= 1
                    continue
                self._running = True
                self._started += 1
                number = self._started
                self._cond.release()
                error = errno.EIO  # unless the sync answers
                try:
                    error = self._run()
                finally:
                    self._cond.acquire()
                    self._running = False
                    self.syncs += 1
                    if error:
                        self._failures += 1
                        self._errno = error
                    else:
                        self._done = number
                    self._cond.notify_all()

    def _run(self) -> int:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            return 0 if self._syncfs(fd) == 0 else (ctypes.get_errno() or errno.EIO)
        finally:
            os.close(fd)


_group_syncs: dict[tuple[int, str], GroupSync] = {}
_group_syncs_lock = threading.Lock()


def group_sync(root: Path) -> GroupSync | None:
    """This process' :class:`GroupSync` of ``root`` (None where there is no ``syncfs``)."""
    if _SYNCFS is None:
        return None
    key = (os.getpid(), str(root))
    with _group_syncs_lock:
        found = _group_syncs.get(key)
        if found is None:
            found = _group_syncs[key] = GroupSync(root, _SYNCFS)
        return found


def _sync_files(paths: Sequence[str], root: Path) -> None:
    """Make ``paths`` (files under ``root``, renames included) durable: one ``syncfs`` of the
    store's filesystem where the C library has it (shared with this process' concurrent
    writers), else an fsync of each file and directory."""
    shared = group_sync(root)
    if shared is not None:
        try:
            shared.sync()
            return
        except OSError as exc:
            # A kernel without syncfs: fsync file by file. A write error stands: an fsync on a
            # descriptor opened after it would no longer report it, and the batch must fail
            # (its rows roll back) rather than commit on pages that may be lost.
            if exc.errno not in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
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


class StoreFull(OSError):
    """The local store's filesystem is below ``ARTISCAN_STORE_MIN_FREE_MB`` of free space: new
    files are turned away, to be sent again later, before the disk the database and the logs
    share fills up (security checklist O-06)."""


def store_free_bytes() -> int | None:
    """Free bytes on the local store's filesystem (None for an S3 store)."""
    current = backend()
    if not isinstance(current, LocalBackend):
        return None
    # The store's root, or the nearest directory above it before the first file makes it (not
    # made here: the root is made private, by the first write).
    where = current.root
    while not where.exists() and where != where.parent:
        where = where.parent
    return shutil.disk_usage(where).free


def store_space_check(*, log: bool = True) -> None:
    """Raise ``StoreFull`` when the local store has less than ``ARTISCAN_STORE_MIN_FREE_MB``
    free. Ingest asks before it writes anything (a file, a quarantined original): the sender
    gets a retryable answer and nothing already stored is touched."""
    free = store_free_bytes()
    floor = settings.ARTISCAN_STORE_MIN_FREE_MB * 2**20
    if free is not None and free < floor:
        if log:
            logger.error(
                "store below its free-space floor: %d MiB free, %d MiB kept free; ingest paused",
                free // 2**20,
                floor // 2**20,
            )
        raise StoreFull(
            f"the image store is full ({free // 2**20} MiB free, "
            f"{floor // 2**20} MiB kept free): send again later"
        )


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


_writers: tuple[int, ThreadPoolExecutor] | None = None
_writers_lock = threading.Lock()


def _writer_pool() -> ThreadPoolExecutor:
    global _writers
    with _writers_lock:
        if _writers is None or _writers[0] != os.getpid():  # none of a parent's threads
            _writers = (os.getpid(), ThreadPoolExecutor(8, thread_name_prefix="artiscan-store"))
        return _writers[1]


class OwnedWrites:
    """Files encrypted and written on a writer thread as they are handed over (:meth:`add`),
    straight at their keys, then made durable together by one sync shared with this process'
    other writers (``Backend.write_owned``); durable when :meth:`wait` returns.

    So the caller goes on with its own work (the ingest door makes the WADO-RS metadata) while
    the files are encrypted and written: AES-GCM and the writes leave the interpreter lock. The
    sizes (``crypto.sealed_size``) are known before anything is encrypted. Only for keys the
    caller owns until ``wait`` returns: nobody else writes them and nothing points at them
    durably (the ingest door holds their uncommitted rows, all inserted before it hands any
    file over). :meth:`wait` must be called once everything is handed over, also when the
    caller gives up (the writer thread waits for files until then)."""

    _END = None

    def __init__(self) -> None:
        self._ring = keyring()
        self._parts: queue.SimpleQueue[list[tuple[str, bytes]] | None] = queue.SimpleQueue()
        self.keys: list[str] = []
        self.sizes: list[int] = []
        self._closed = False
        target = backend()
        reuse = bool(getattr(target, "writes_one_at_a_time", False))
        self._future = _writer_pool().submit(lambda: target.write_owned(self._encrypted(reuse)))

    def add(self, items: Sequence[tuple[str, bytes]]) -> list[int]:
        """Hand over files (keys checked now); returns the size each will have encrypted."""
        if self._closed:
            raise RuntimeError("files handed over after wait()")
        checked = [(_checked(key), data) for key, data in items]
        sizes = [sealed_size(len(data), keyring=self._ring) for _, data in checked]
        self.keys += [key for key, _ in checked]
        self.sizes += sizes
        self._parts.put(checked)
        return sizes

    def _encrypted(self, reuse: bool) -> Iterator[tuple[str, Blob]]:
        """Each file encrypted as the writer asks for it. A backend that writes one at a time
        (``reuse``) gets every file in one buffer, reused: only the file being written is held
        encrypted, and a batch allocates one buffer instead of one per file (a buffer above
        glibc's mmap threshold, 1 MiB under ``serve``, is a fresh mapping faulted in page by
        page: a multi-frame file, or any file under a lower threshold; see
        benchmarks/store_write.py)."""
        buffer = bytearray()
        while (part := self._parts.get()) is not self._END:
            for key, data in part:
                if not reuse:
                    yield key, encrypt(data, keyring=self._ring, associated=key.encode())
                    continue
                size = sealed_size(len(data), keyring=self._ring)
                if len(buffer) < size:
                    buffer = bytearray(size)
                yield key, seal_into(buffer, data, keyring=self._ring, associated=key.encode())

    def wait(self) -> None:
        """No more files: return once every one handed over is durable; raise the write's
        error if it failed."""
        if not self._closed:
            self._closed = True
            self._parts.put(self._END)
        self._future.result()


def store_sealed_size(plaintext_size: int) -> int:
    """The size a file of ``plaintext_size`` bytes has once stored (encrypted)."""
    return sealed_size(plaintext_size, keyring=keyring())


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
