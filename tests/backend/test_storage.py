"""Encrypted storage: AES-GCM at rest, bound to its key, rotatable, and no way out of the root,
on the local directory and on a real S3-compatible server (moto's standalone server, started
on a free port as its own process; the store talks to it over HTTP through boto3)."""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from backend.storage.conf import storage_config
from backend.storage.crypto import DecryptionError
from backend.storage.store import (
    OwnedWrites,
    S3Backend,
    StorageKeyError,
    backend,
    store_exists,
    store_get,
    store_key_id,
    store_keys,
    store_put,
    store_put_many,
    store_sealed_size,
)
from tests.conftest import _free_port, _listening_process

S3_ENV = {
    "ARTISCAN_S3_ACCESS_KEY_ID": "testing-key",
    "ARTISCAN_S3_SECRET_ACCESS_KEY": "testing-secret",
    "ARTISCAN_S3_REGION": "us-east-1",
}


def _key(key_id: str) -> str:
    return f"{key_id}:" + base64.urlsafe_b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> Iterator[str]:
    """moto's S3-compatible HTTP server in a process of its own; yields its endpoint URL."""
    port = _free_port()
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with _listening_process(command, env=env, port=port, log=log, what="moto S3 server"):
        yield f"http://127.0.0.1:{port}"


def _raw_client(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_ENV["ARTISCAN_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["ARTISCAN_S3_SECRET_ACCESS_KEY"],
    )


class Raw:
    """The stored bytes, read and changed behind the store's back."""

    def __init__(self, *, root: Path | None = None, endpoint: str = "", bucket: str = "") -> None:
        self.root, self.bucket, self.prefix = root, bucket, "artiscan/"
        self.client = _raw_client(endpoint) if endpoint else None

    def read(self, key: str) -> bytes:
        if self.root is not None:
            return (self.root / key).read_bytes()
        body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
        return bytes(body.read())

    def write(self, key: str, blob: bytes) -> None:
        if self.root is not None:
            (self.root / key).parent.mkdir(parents=True, exist_ok=True)
            (self.root / key).write_bytes(blob)
        else:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=blob)

    def move(self, key: str, to: str) -> None:
        self.write(to, self.read(key))
        if self.root is not None:
            (self.root / key).unlink()
        else:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)


def _configure(kind, request, settings, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path / "store"
    settings.STORAGE_KEYS = _key("k1")
    if kind == "local":
        monkeypatch.setenv("ARTISCAN_STORAGE", "local")
        settings.raw = Raw(root=tmp_path / "store")
    else:
        endpoint = request.getfixturevalue("s3_server")
        bucket = f"artiscan-{os.urandom(4).hex()}"
        _raw_client(endpoint).create_bucket(Bucket=bucket)
        for name, value in {
            **S3_ENV,
            "ARTISCAN_STORAGE": "s3",
            "ARTISCAN_S3_ENDPOINT_URL": endpoint,
            "ARTISCAN_S3_BUCKET": bucket,
            "ARTISCAN_S3_PREFIX": "artiscan",
        }.items():
            monkeypatch.setenv(name, value)
        settings.raw = Raw(endpoint=endpoint, bucket=bucket)
    storage_config.cache_clear()
    request.addfinalizer(storage_config.cache_clear)
    return settings


@pytest.fixture(params=["local", "s3"])
def store(request, settings, tmp_path, monkeypatch):
    return _configure(request.param, request, settings, tmp_path, monkeypatch)


@pytest.fixture
def local_store(request, settings, tmp_path, monkeypatch):
    return _configure("local", request, settings, tmp_path, monkeypatch)


@pytest.fixture
def s3_store(request, settings, tmp_path, monkeypatch):
    return _configure("s3", request, settings, tmp_path, monkeypatch)


def test_a_file_reads_back_and_is_not_plaintext_at_rest(store):
    secret = b"DICM" + b"MR pixel data " * 100
    store_put("instances/1/a.dcm", secret)
    assert store_get("instances/1/a.dcm") == secret
    assert b"MR pixel data" not in store.raw.read("instances/1/a.dcm")
    assert store_exists("instances/1/a.dcm")
    assert not store_exists("instances/1/b.dcm")


def test_local_files_are_private_to_the_service_user(local_store):
    store = local_store
    store_put("instances/1/a.dcm", b"x")
    assert oct((store.MEDIA_ROOT / "instances/1/a.dcm").stat().st_mode)[-3:] == "600"


def test_the_s3_backend_is_chosen_by_the_environment_and_writes_to_the_bucket(s3_store):
    store = s3_store
    assert isinstance(backend(), S3Backend)
    store_put("instances/1/a.dcm", b"payload")
    listed = store.raw.client.list_objects_v2(Bucket=store.raw.bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["artiscan/instances/1/a.dcm"]
    assert not (store.MEDIA_ROOT / "instances").exists()  # nothing on the local disk


def test_a_batch_is_written_encrypted_and_reads_back(store):
    items = [(f"instances/1/{i}.dcm", f"MR slice {i} ".encode() * 50) for i in range(5)]
    sizes = store_put_many(items)
    assert len(sizes) == 5 and all(
        size > len(data) for size, (_, data) in zip(sizes, items, strict=True)
    )
    for key, data in items:
        assert store_get(key) == data
        assert b"MR slice" not in store.raw.read(key)
    assert sorted(store_keys("instances/")) == sorted(key for key, _ in items)


def test_owned_writes_take_parts_announce_their_sizes_and_write_them_encrypted(store):
    """The ingest door's path: the sizes are known before anything is written (they go into the
    rows first), the files are encrypted and written on the writer's thread as parts are handed
    over, and are all there, at the announced sizes, when ``wait`` returns (either backend)."""
    items = [(f"instances/1/s{i}.dcm", os.urandom(1000 * i + 7)) for i in range(4)]
    assert [store_sealed_size(len(d)) for _, d in items] == [
        len(d) + store_sealed_size(0) for _, d in items
    ]
    writes = OwnedWrites()
    first = writes.add(items[:1])
    rest = writes.add(items[1:])
    writes.wait()
    assert first + rest == writes.sizes == [store_sealed_size(len(d)) for _, d in items]
    assert writes.keys == [key for key, _ in items]
    for (key, data), size in zip(items, writes.sizes, strict=True):
        assert len(store.raw.read(key)) == size
        assert store_get(key) == data
    with pytest.raises(RuntimeError):
        writes.add(items[:1])  # after wait(): nothing more


def test_owned_writes_of_shrinking_and_growing_files_each_read_back_whole(store):
    """A backend that writes one file at a time gets every file in one reused buffer: a small
    file after a big one is written at its own size, never with the big one's tail, and a
    bigger one after it gets a bigger buffer (the S3 backend, which collects the blobs for
    concurrent PUTs, gets a buffer per file)."""
    sizes = [50_000, 100, 30_000, 0, 70_000, 50_000]
    items = [(f"instances/1/r{i}.dcm", os.urandom(n)) for i, n in enumerate(sizes)]
    writes = OwnedWrites()
    writes.add(items[:3])
    writes.add(items[3:])
    writes.wait()
    for key, data in items:
        assert len(store.raw.read(key)) == store_sealed_size(len(data))
        assert store_get(key) == data


def test_owned_writes_refuse_an_unsafe_key_before_anything_is_written(store):
    writes = OwnedWrites()
    try:
        with pytest.raises(StorageKeyError):
            writes.add([("a/ok.bin", b"x"), ("../escape.dcm", b"y")])
    finally:
        writes.wait()
    assert list(store_keys()) == []


def test_a_local_batch_leaves_no_temporary_files_and_private_modes(local_store):
    store_put_many([(f"a/{i}.bin", b"x" * 100) for i in range(3)])
    on_disk = sorted(p.name for p in (local_store.MEDIA_ROOT / "a").iterdir())
    assert on_disk == ["0.bin", "1.bin", "2.bin"]
    assert {oct(p.stat().st_mode)[-3:] for p in (local_store.MEDIA_ROOT / "a").iterdir()} == {"600"}


def test_a_batch_with_an_unsafe_key_writes_nothing(store):
    with pytest.raises(StorageKeyError):
        store_put_many([("a/ok.bin", b"x"), ("../escape.bin", b"y")])
    assert list(store_keys()) == []


def test_a_file_moved_to_another_key_does_not_decrypt(store):
    store_put("instances/1/a.dcm", b"payload")
    store.raw.move("instances/1/a.dcm", "instances/1/b.dcm")
    with pytest.raises(DecryptionError, match="altered or moved"):
        store_get("instances/1/b.dcm")


def test_a_tampered_file_does_not_decrypt(store):
    store_put("x/y.bin", b"payload" * 10)
    blob = bytearray(store.raw.read("x/y.bin"))
    blob[-1] ^= 1
    store.raw.write("x/y.bin", bytes(blob))
    with pytest.raises(DecryptionError):
        store_get("x/y.bin")


def test_a_missing_file_is_file_not_found(store):
    with pytest.raises(FileNotFoundError):
        store_get("instances/none.dcm")


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
    assert sorted(store_keys()) == ["instances/1/a.dcm", "instances/1/b.dcm"]
    assert {store_key_id(k) for k in store_keys()} == {"k2"}
    store.STORAGE_KEYS = store.STORAGE_KEYS.split(",")[0]  # the old key is gone
    assert store_get("instances/1/b.dcm") == b"second"
    call_command("storage_rotate")
    assert "0 of 2 files re-encrypted" in capsys.readouterr().out


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


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ARTISCAN_STORAGE": "ftp"}, "ARTISCAN_STORAGE: expected one of local, s3"),
        ({"ARTISCAN_STORAGE": "s3"}, "ARTISCAN_S3_BUCKET must be set"),
        (
            {"ARTISCAN_STORAGE": "s3", "ARTISCAN_S3_BUCKET": "b", "ARTISCAN_S3_ACCESS_KEY_ID": "k"},
            "set both or neither",
        ),
    ],
)
def test_a_bad_storage_configuration_stops_with_the_variable_named(monkeypatch, env, message):
    for name in (
        "ARTISCAN_S3_BUCKET",
        "ARTISCAN_S3_ACCESS_KEY_ID",
        "ARTISCAN_S3_SECRET_ACCESS_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    storage_config.cache_clear()
    try:
        with pytest.raises(ImproperlyConfigured, match=message):
            storage_config()
    finally:
        storage_config.cache_clear()
