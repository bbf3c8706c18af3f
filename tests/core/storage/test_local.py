"""LocalObjectStore: the shared contract, file layout, atomic writes, error mapping.

Also the backend-independent parts of core.storage (key validation, error codes, the factory).
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import uuid
from pathlib import Path

import pytest

from core.storage import (
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    StorageError,
    StorageUnavailable,
    make_store,
    validate_key,
)
from tests.support.storage import ObjectStoreContract, random_bytes


class TestLocalContract(ObjectStoreContract):
    @pytest.fixture
    def store(self, local_store: LocalObjectStore) -> ObjectStore:
        return local_store


def leftovers(root: Path) -> list[Path]:
    """Files under ``root`` that are not objects (temporary files)."""
    return [p for p in root.rglob("*") if p.is_file() and "~" in p.name]


def test_layout_is_one_file_per_key(local_store: LocalObjectStore) -> None:
    sha = hashlib.sha256(b"pixels").hexdigest()
    local_store.put(f"images/{sha}", b"pixels")
    local_store.put(f"heatmaps/{uuid.UUID(int=7)}.png", b"png")
    root = local_store.root
    assert (root / "images" / sha).read_bytes() == b"pixels"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == [f"heatmaps/{uuid.UUID(int=7)}.png", f"images/{sha}"]


def test_writes_leave_no_temporary_files(local_store: LocalObjectStore) -> None:
    for i in range(20):
        local_store.put(f"images/{i % 3}", random_bytes(1000 + i, seed=i))
    assert leftovers(local_store.root) == []
    assert sorted(p.name for p in (local_store.root / "images").iterdir()) == ["0", "1", "2"]


def test_concurrent_writes_of_one_key_end_with_a_complete_file(
    local_store: LocalObjectStore,
) -> None:
    payloads = [random_bytes(256 * 1024, seed=seed) for seed in range(8)]
    barrier = threading.Barrier(len(payloads))
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                local_store.put("images/same", data)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert local_store.get("images/same") in payloads
    assert leftovers(local_store.root) == []


def test_readers_never_see_a_partial_object(local_store: LocalObjectStore) -> None:
    payloads = [random_bytes(512 * 1024, seed=100 + seed) for seed in range(2)]
    local_store.put("k", payloads[0])
    stop = threading.Event()
    seen: list[bytes] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(local_store.get("k"))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(30):
            local_store.put("k", payloads[i % 2])
    finally:
        stop.set()
        reader.join()
    assert seen
    assert all(data in payloads for data in seen)


def test_failed_write_keeps_the_old_object(
    local_store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_store.put("images/a", b"old")

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(StorageUnavailable):  # a full disk may clear up: transient
        local_store.put("images/a", b"new and longer")
    monkeypatch.undo()
    assert local_store.get("images/a") == b"old"
    assert leftovers(local_store.root) == []


def test_path_conflicts_are_permanent_errors(local_store: LocalObjectStore) -> None:
    local_store.put("a", b"file")
    with pytest.raises(StorageError) as info:
        local_store.put("a/b", b"below a file")
    assert type(info.value) is StorageError
    local_store.put("d/e", b"x")
    with pytest.raises(StorageError) as info:
        local_store.put("d", b"over a directory")
    assert type(info.value) is StorageError
    assert leftovers(local_store.root) == []


def test_presign_is_not_supported(local_store: LocalObjectStore) -> None:
    local_store.put("images/a", b"x")
    assert local_store.presign_get("images/a", expires_s=60) is None
    assert local_store.presign_put("images/a", expires_s=60, content_type="image/png") is None


def test_check_creates_the_root(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "a" / "b")
    store.check()
    assert (tmp_path / "a" / "b").is_dir()


def test_check_fails_when_the_root_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "root").write_bytes(b"not a directory")
    with pytest.raises(StorageUnavailable):
        LocalObjectStore(tmp_path / "root").check()


# -- backend-independent parts ------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "images/" + hashlib.sha256(b"").hexdigest(),
        f"heatmaps/{uuid.UUID(int=1)}.png",
        "a",
        "A.b-c_d/E.F",
        ".hidden/x.y",
        "x" * 1024,
    ],
)
def test_valid_keys_are_returned_unchanged(key: str) -> None:
    assert validate_key(key) == key


def test_error_codes_are_stable() -> None:
    assert StorageError.code == "storage_error"
    assert ObjectNotFound("k").code == "object_not_found"
    assert StorageUnavailable("down").code == "storage_unavailable"
    assert issubclass(ObjectNotFound, StorageError)
    assert issubclass(StorageUnavailable, StorageError)
    assert not issubclass(ObjectNotFound, StorageUnavailable)


def test_factory_builds_each_backend(tmp_path: Path) -> None:
    common = {
        "s3_endpoint_url": "http://127.0.0.1:9",
        "s3_bucket": "diffall",
        "s3_region": None,
        "s3_access_key_id": "key",
        "s3_secret_access_key": "secret",
        "s3_presign_endpoint_url": "http://localhost:9000",
    }
    local = make_store(backend="local", local_root=tmp_path, **common)
    assert isinstance(local, LocalObjectStore)
    assert local.root == tmp_path
    s3 = make_store(backend="s3", local_root=None, **common)
    assert isinstance(s3, S3ObjectStore)
    assert (s3.endpoint_url, s3.bucket, s3.region) == ("http://127.0.0.1:9", "diffall", "us-east-1")
    assert s3.presign_endpoint_url == "http://localhost:9000"
    assert "secret" not in repr(s3)


@pytest.mark.parametrize(
    ("backend", "local_root", "bucket"),
    [("local", None, "diffall"), ("s3", Path("/tmp"), None), ("gcs", Path("/tmp"), "diffall")],
)
def test_factory_refuses_bad_arguments(
    backend: str, local_root: Path | None, bucket: str | None
) -> None:
    with pytest.raises(ValueError):
        make_store(
            backend=backend,
            local_root=local_root,
            s3_endpoint_url=None,
            s3_bucket=bucket,
            s3_region="us-east-1",
            s3_access_key_id=None,
            s3_secret_access_key=None,
            s3_presign_endpoint_url=None,
        )


def test_files_and_folders_are_private_whatever_the_umask(tmp_path: Path) -> None:
    import io
    import os
    import stat

    old = os.umask(0o022)
    try:
        store = LocalObjectStore(tmp_path / "root")
        store.put("images/abc", b"x")
        store.put_file("heatmaps/h.png", io.BytesIO(b"y" * 3_000_000))
    finally:
        os.umask(old)
    assert store.get("heatmaps/h.png") == b"y" * 3_000_000
    for path in (tmp_path / "root" / "images" / "abc", tmp_path / "root" / "heatmaps" / "h.png"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (tmp_path / "root", tmp_path / "root" / "images"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
