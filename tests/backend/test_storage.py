"""Encrypted storage: AES-GCM at rest, bound to its path, rotatable, and no way out of the root."""

from __future__ import annotations

import base64
import os

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from backend.storage.crypto import DecryptionError
from backend.storage.store import (
    StorageKeyError,
    store_get,
    store_key_id,
    store_keys,
    store_put,
)


def _key(key_id: str) -> str:
    return f"{key_id}:" + base64.urlsafe_b64encode(os.urandom(32)).decode()


@pytest.fixture
def store(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "store"
    settings.STORAGE_KEYS = _key("k1")
    return settings


def test_a_file_reads_back_and_is_not_plaintext_on_disk(store):
    secret = b"DICM" + b"MR pixel data " * 100
    store_put("instances/1/a.dcm", secret)
    assert store_get("instances/1/a.dcm") == secret
    on_disk = (store.MEDIA_ROOT / "instances/1/a.dcm").read_bytes()
    assert b"MR pixel data" not in on_disk
    assert oct((store.MEDIA_ROOT / "instances/1/a.dcm").stat().st_mode)[-3:] == "600"


def test_a_file_moved_to_another_key_does_not_decrypt(store):
    store_put("instances/1/a.dcm", b"payload")
    (store.MEDIA_ROOT / "instances/1/a.dcm").rename(store.MEDIA_ROOT / "instances/1/b.dcm")
    with pytest.raises(DecryptionError, match="altered or moved"):
        store_get("instances/1/b.dcm")


def test_a_tampered_file_does_not_decrypt(store):
    store_put("x/y.bin", b"payload" * 10)
    path = store.MEDIA_ROOT / "x/y.bin"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(DecryptionError):
        store_get("x/y.bin")


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "a/../../b", "/abs/path", "a//b", "", "a/.hidden", "a\\b", "a/b\n"]
)
def test_unsafe_storage_keys_are_refused(store, key):
    with pytest.raises(StorageKeyError):
        store_put(key, b"x")


def test_rotation_re_encrypts_with_the_new_key_and_old_files_stay_readable(store, capsys):
    store_put("instances/1/a.dcm", b"first")
    store_put("instances/1/b.dcm", b"second")
    old = store.STORAGE_KEYS
    store.STORAGE_KEYS = _key("k2") + "," + old
    assert store_get("instances/1/a.dcm") == b"first"  # read with the old key before rotation
    call_command("storage_rotate")
    assert "2 of 2 files re-encrypted" in capsys.readouterr().out
    assert {store_key_id(k) for k in store_keys()} == {"k2"}
    store.STORAGE_KEYS = store.STORAGE_KEYS.split(",")[0]  # the old key is gone
    assert store_get("instances/1/b.dcm") == b"second"


def test_a_file_under_a_removed_key_says_which_key_is_missing(store):
    store_put("a.bin", b"x")
    store.STORAGE_KEYS = _key("k9")
    with pytest.raises(DecryptionError, match="'k1'"):
        store_get("a.bin")


@pytest.mark.parametrize("spec", ["nokey", "k1:notbase64!!", "k1:" + "QQ==", "k1:AAAA,k1:AAAA"])
def test_a_malformed_keyring_names_the_variable(store, spec):
    store.STORAGE_KEYS = spec
    with pytest.raises(ImproperlyConfigured, match="ARTISCAN_STORAGE_KEYS"):
        store_put("a.bin", b"x")
