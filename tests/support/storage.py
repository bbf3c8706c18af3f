"""The behaviour every object store shows, as tests.

:class:`ObjectStoreContract` holds the behaviour every :class:`~core.storage.ObjectStore` must
show; ``tests/core/storage/test_local.py`` and ``test_s3.py`` run it against their backend by
subclassing it and providing a ``store`` fixture.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pytest

from core.storage import ObjectNotFound, ObjectStore, S3ObjectStore
from tests.s3server import TEST_REGION

INVALID_KEYS = [
    "",
    "/images/abc",  # absolute
    "images/",  # trailing slash
    "images//abc",  # empty segment
    "../etc/passwd",
    "images/../secret",
    "images/..",
    "a..b",
    "./images",
    "images/./abc",
    ".",
    "images/a b",  # space
    "images/a~",  # '~' marks the local store's temporary files
    "images\\abc",
    "images/é",
    "images/abc\n",
    "x" * 1025,
]


class S3StoreFactory(Protocol):
    """Signature of the ``make_s3_store`` fixture (see conftest.py)."""

    def __call__(
        self,
        *,
        endpoint_url: str | None = None,
        bucket: str | None = None,
        region: str = TEST_REGION,
        presign_endpoint_url: str | None = None,
        create_bucket: bool = False,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 5.0,
        max_attempts: int = 1,
    ) -> S3ObjectStore: ...


def random_bytes(n: int, *, seed: int) -> bytes:
    """Return ``n`` seeded pseudo-random bytes."""
    return np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes()


class ObjectStoreContract:
    """Behaviour shared by every backend; subclasses provide the ``store`` fixture."""

    def test_is_an_object_store(self, store: ObjectStore) -> None:
        assert isinstance(store, ObjectStore)

    def test_round_trip(self, store: ObjectStore) -> None:
        data = random_bytes(300_000, seed=1)
        key = "images/" + "0123456789abcdef" * 4
        assert not store.exists(key)
        store.put(key, data, content_type="image/png")
        assert store.exists(key)
        assert store.size(key) == len(data)
        assert store.get(key) == data
        store.delete(key)
        assert not store.exists(key)
        with pytest.raises(ObjectNotFound):
            store.get(key)

    def test_put_replaces(self, store: ObjectStore) -> None:
        store.put("heatmaps/x.png", b"first version")
        store.put("heatmaps/x.png", b"second")
        assert store.get("heatmaps/x.png") == b"second"
        assert store.size("heatmaps/x.png") == 6

    def test_empty_object(self, store: ObjectStore) -> None:
        store.put("empty", b"")
        assert store.exists("empty")
        assert store.size("empty") == 0
        assert store.get("empty") == b""

    def test_keys_are_independent(self, store: ObjectStore) -> None:
        store.put("a/b", b"ab")
        store.put("a/c", b"ac")
        store.put("A/b", b"Ab")  # keys are case-sensitive
        assert [store.get(k) for k in ("a/b", "a/c", "A/b")] == [b"ab", b"ac", b"Ab"]
        store.delete("a/b")
        assert store.get("a/c") == b"ac"
        assert store.get("A/b") == b"Ab"

    def test_missing_key(self, store: ObjectStore) -> None:
        key = "images/missing"
        with pytest.raises(ObjectNotFound) as info:
            store.get(key)
        assert info.value.key == key
        assert info.value.code == "object_not_found"
        with pytest.raises(ObjectNotFound):
            store.size(key)
        assert store.exists(key) is False

    def test_a_prefix_is_not_an_object(self, store: ObjectStore) -> None:
        store.put("images/abc", b"x")
        assert not store.exists("images")
        with pytest.raises(ObjectNotFound):
            store.get("images")
        with pytest.raises(ObjectNotFound):
            store.size("images")
        store.delete("images")  # nothing there: no error, and the object below survives
        assert store.get("images/abc") == b"x"

    def test_delete_is_idempotent(self, store: ObjectStore) -> None:
        store.delete("never/written")
        store.put("k", b"v")
        store.delete("k")
        store.delete("k")
        assert not store.exists("k")

    def test_invalid_keys_are_refused(self, store: ObjectStore) -> None:
        for key in INVALID_KEYS:
            with pytest.raises(ValueError):
                store.put(key, b"x")
            for method in (store.get, store.exists, store.size, store.delete):
                with pytest.raises(ValueError):
                    method(key)
            with pytest.raises(ValueError):
                store.presign_put(key, expires_s=60, content_type="application/octet-stream")
            with pytest.raises(ValueError):
                store.presign_get(key, expires_s=60)

    def test_presign_expiry_is_validated(self, store: ObjectStore) -> None:
        for expires_s in (0, -1, 7 * 24 * 3600 + 1):
            with pytest.raises(ValueError):
                store.presign_get("images/a", expires_s=expires_s)
            with pytest.raises(ValueError):
                store.presign_put("images/a", expires_s=expires_s, content_type="image/png")

    def test_check_passes(self, store: ObjectStore) -> None:
        store.check()
