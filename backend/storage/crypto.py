"""AES-256-GCM envelope for files at rest, with named keys so keys can be rotated.

Layout of an encrypted blob: ``b"ASX1"`` · key-id length (1 byte) · key id (ASCII) · 12-byte
nonce · ciphertext with its 16-byte tag. The storage key (the file's path in the store) is the
associated data, so a blob copied to another path does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"ASX1"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class KeyringError(ValueError):
    pass


class DecryptionError(Exception):
    pass


class UnknownKey(DecryptionError):
    """The file names a key this host's key ring lacks (a rotation not rolled out here): the
    host's configuration, not the file, is at fault."""


@dataclass(frozen=True)
class Keyring:
    """Named 256-bit keys; ``current_id`` encrypts, every key decrypts."""

    keys: dict[str, bytes]
    current_id: str

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """``"id:base64,id2:base64"`` (urlsafe or standard base64 of 32 bytes each)."""
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for item in spec.split(","):
            key_id, sep, encoded = item.strip().partition(":")
            if not sep or not _KEY_ID.match(key_id):
                raise KeyringError("expected comma-separated 'id:base64key' pairs")
            try:
                raw = base64.urlsafe_b64decode(encoded.replace("+", "-").replace("/", "_"))
            except (binascii.Error, ValueError):
                raise KeyringError(f"key {key_id!r} is not base64") from None
            if len(raw) != 32:
                raise KeyringError(f"key {key_id!r} must be 32 bytes, got {len(raw)}")
            if key_id in keys:
                raise KeyringError(f"key id {key_id!r} appears twice")
            keys[key_id] = raw
            order.append(key_id)
        return cls(keys=keys, current_id=order[0])


_NONCE = 12
_TAG = 16


def sealed_size(plaintext_size: int, *, keyring: Keyring) -> int:
    """The size of ``encrypt``'s blob for a plaintext of ``plaintext_size`` bytes."""
    return len(MAGIC) + 1 + len(keyring.current_id) + _NONCE + plaintext_size + _TAG


def encrypt(plaintext: bytes, *, keyring: Keyring, associated: bytes) -> bytearray:
    """The blob of ``plaintext`` (one buffer: the header, then the ciphertext written after it
    by ``encrypt_into``, no concatenation copying a whole file again)."""
    blob = bytearray(sealed_size(len(plaintext), keyring=keyring))
    seal_into(blob, plaintext, keyring=keyring, associated=associated)
    return blob


def seal_into(
    out: bytearray | memoryview, plaintext: bytes, *, keyring: Keyring, associated: bytes
) -> memoryview:
    """Write the blob of ``plaintext`` at the start of ``out`` (at least ``sealed_size`` long,
    so a writer can reuse one buffer for file after file); returns the view of it."""
    size = sealed_size(len(plaintext), keyring=keyring)
    if len(out) < size:
        raise ValueError(f"the buffer holds {len(out)} bytes, the blob needs {size}")
    key_id = keyring.current_id.encode()
    nonce = os.urandom(_NONCE)
    head = MAGIC + bytes([len(key_id)]) + key_id + nonce
    view = memoryview(out)[:size]
    view[: len(head)] = head
    AESGCM(keyring.keys[keyring.current_id]).encrypt_into(
        nonce, plaintext, associated, view[len(head) :]
    )
    return view


def key_id_of(blob: bytes) -> str:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 1:
        raise DecryptionError("not an ArtiScan encrypted blob")
    n = blob[len(MAGIC)]
    return blob[len(MAGIC) + 1 : len(MAGIC) + 1 + n].decode("ascii", errors="replace")


def decrypt(blob: bytes, *, keyring: Keyring, associated: bytes) -> bytes:
    key_id = key_id_of(blob)
    key = keyring.keys.get(key_id)
    if key is None:
        raise UnknownKey(f"encrypted with key {key_id!r}, which is not configured")
    start = len(MAGIC) + 1 + len(key_id)
    # A view: the ciphertext is not copied before it is decrypted.
    nonce, sealed = blob[start : start + _NONCE], memoryview(blob)[start + _NONCE :]
    try:
        return AESGCM(key).decrypt(nonce, sealed, associated)
    except InvalidTag:
        raise DecryptionError("authentication failed: the file was altered or moved") from None
