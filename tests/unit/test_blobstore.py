"""The filesystem blob store: content addressing, verification, atomic and concurrent writes."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from inspectloop.core.blobstore import (
    BlobCorruptError,
    BlobNotFoundError,
    BlobRef,
    BlobStore,
    FilesystemBlobStore,
    build_blob_store,
)
from inspectloop.core.errors import BackendUnavailableError, ConfigError, PermanentError
from inspectloop.core.settings import BlobStoreSettings, CommonSettings

DATA = b"\x89PNG fake image bytes"
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "blobs", max_blob_bytes=1024)


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_round_trip(store: FilesystemBlobStore) -> None:
    ref = store.put(DATA, "image/png")
    assert ref == BlobRef(DIGEST, len(DATA), store.uri(DIGEST), "image/png")
    assert store.get(DIGEST) == DATA
    assert store.exists(DIGEST)
    assert isinstance(store, BlobStore)


def test_layout_and_uri(store: FilesystemBlobStore) -> None:
    ref = store.put(DATA)
    expected = store.root / "sha256" / DIGEST[:2] / DIGEST[2:4] / DIGEST
    assert all_files(store.root) == [expected]
    assert ref.uri.startswith("file:///")
    assert Path(url2pathname(urlparse(ref.uri).path)) == expected
    assert ref.content_type == "application/octet-stream"


def test_relative_root_gives_absolute_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ref = FilesystemBlobStore(Path("rel"), 1024).put(DATA)
    assert ref.uri == (tmp_path / "rel" / "sha256" / DIGEST[:2] / DIGEST[2:4] / DIGEST).as_uri()


def test_empty_blob(store: FilesystemBlobStore) -> None:
    ref = store.put(b"")
    assert ref.size_bytes == 0
    assert store.get(ref.sha256) == b""


def test_stored_blob_is_read_only(store: FilesystemBlobStore) -> None:
    store.put(DATA)
    mode = stat.S_IMODE(store.path(DIGEST).stat().st_mode)
    assert mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) == 0


def test_put_is_idempotent_and_does_not_rewrite(store: FilesystemBlobStore) -> None:
    first = store.put(DATA, "image/png")
    inode = store.path(DIGEST).stat().st_ino
    second = store.put(DATA, "image/png")
    assert first == second
    assert store.path(DIGEST).stat().st_ino == inode  # same file, not replaced
    assert len(all_files(store.root)) == 1


def test_missing_blob(store: FilesystemBlobStore) -> None:
    assert not store.exists(DIGEST)
    with pytest.raises(BlobNotFoundError, match=DIGEST):
        store.get(DIGEST)
    assert issubclass(BlobNotFoundError, PermanentError)


def test_corruption_is_detected_on_read(store: FilesystemBlobStore) -> None:
    store.put(DATA)
    path = store.path(DIGEST)
    path.chmod(0o644)
    path.write_bytes(b"\x89PNG tampered bytes!!")  # same length, different content
    with pytest.raises(BlobCorruptError, match="corrupt"):
        store.get(DIGEST)
    assert issubclass(BlobCorruptError, PermanentError)


def test_truncated_blob_is_repaired_by_put(store: FilesystemBlobStore) -> None:
    store.put(DATA)
    path = store.path(DIGEST)
    path.chmod(0o644)
    path.write_bytes(DATA[:5])
    store.put(DATA)
    assert store.get(DIGEST) == DATA


@pytest.mark.parametrize(
    "bad",
    [
        "",
        DIGEST.upper(),
        DIGEST[:-1],
        DIGEST + "0",
        "g" * 64,
        "../../../../etc/passwd",
        "../" + DIGEST[3:],
        DIGEST[:62] + "/x",
    ],
)
def test_bad_sha256_is_rejected(store: FilesystemBlobStore, bad: str) -> None:
    for call in (store.get, store.exists, store.uri, store.path):
        with pytest.raises(PermanentError, match="64 lowercase hex"):
            call(bad)


def test_oversize_blob_is_rejected(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path, max_blob_bytes=10)
    store.put(b"x" * 10)  # the limit itself is allowed
    with pytest.raises(PermanentError, match=r"11 bytes .* limit of 10 bytes"):
        store.put(b"x" * 11)
    assert len(all_files(tmp_path)) == 1


def test_failed_rename_leaves_nothing_behind(
    store: FilesystemBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(BackendUnavailableError, match="No space left"):
        store.put(DATA)
    monkeypatch.undo()
    assert not store.exists(DIGEST)
    assert all_files(store.root) == []  # no temp file either


def test_failed_write_leaves_nothing_behind(
    store: FilesystemBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync

    def fail(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # the temp file's data, not a directory
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(BackendUnavailableError):
        store.put(DATA)
    monkeypatch.undo()
    assert all_files(store.root) == []
    store.put(DATA)  # and the store still works afterwards
    assert store.get(DIGEST) == DATA


def test_interrupt_during_write_leaves_nothing_behind(
    store: FilesystemBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        store.put(DATA)
    monkeypatch.undo()
    assert all_files(store.root) == []


def test_concurrent_puts_of_the_same_blob(store: FilesystemBlobStore) -> None:
    data = os.urandom(1000)
    barrier = threading.Barrier(16)

    def put() -> BlobRef:
        barrier.wait()
        return store.put(data)

    with ThreadPoolExecutor(16) as pool:
        refs = list(pool.map(lambda _: put(), range(16)))
    assert len(set(refs)) == 1
    assert store.get(refs[0].sha256) == data
    assert all_files(store.root) == [store.path(refs[0].sha256)]


def test_concurrent_puts_of_different_blobs(store: FilesystemBlobStore) -> None:
    blobs = [os.urandom(100) for _ in range(64)]
    with ThreadPoolExecutor(16) as pool:
        refs = list(pool.map(store.put, blobs))
    assert [store.get(r.sha256) for r in refs] == blobs
    assert len(all_files(store.root)) == 64


def _put_in_process(root: str, data: bytes, start: multiprocessing.synchronize.Event) -> None:
    start.wait()
    FilesystemBlobStore(Path(root), 1024).put(data)


def test_concurrent_puts_from_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    data = os.urandom(512)
    procs = [
        ctx.Process(target=_put_in_process, args=(str(tmp_path), data, start)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    store = FilesystemBlobStore(tmp_path, 1024)
    digest = hashlib.sha256(data).hexdigest()
    assert store.get(digest) == data
    assert all_files(tmp_path) == [store.path(digest)]


def test_build_from_common_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.upper().startswith("INSPECTLOOP_")]:
        monkeypatch.delenv(name)
    settings = CommonSettings.model_validate({"data_dir": tmp_path})
    store = build_blob_store(settings.blob_store)
    assert isinstance(store, FilesystemBlobStore)
    assert store.root == tmp_path / "blobs"
    assert store.max_blob_bytes == settings.blob_store.max_blob_bytes
    ref = store.put(DATA)
    assert store.get(ref.sha256) == DATA


def test_build_without_root_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"blob_store\.root"):
        build_blob_store(BlobStoreSettings.model_validate({}))


def test_non_positive_limit_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        FilesystemBlobStore(tmp_path, max_blob_bytes=0)
