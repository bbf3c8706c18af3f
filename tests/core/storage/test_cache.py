"""``CachingObjectStore``: immutable images served from memory, bounded, write-through."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.storage import LocalObjectStore, ObjectNotFound, ObjectStore
from core.storage.cache import CachingObjectStore


class CountingStore(LocalObjectStore):
    """A real local store that counts reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads = 0

    def get(self, key: str) -> bytes:
        self.reads += 1
        return super().get(key)


@pytest.fixture
def inner(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "store")


def test_images_are_read_once_then_served_from_memory(inner: CountingStore) -> None:
    cache = CachingObjectStore(inner, max_bytes=1000)
    assert isinstance(cache, ObjectStore)
    inner.put("images/aa", b"x" * 100)
    assert cache.get("images/aa") == b"x" * 100
    assert cache.get("images/aa") == b"x" * 100
    assert inner.reads == 1 and (cache.hits, cache.misses) == (1, 1)


def test_other_prefixes_are_never_cached(inner: CountingStore) -> None:
    cache = CachingObjectStore(inner, max_bytes=1000)
    inner.put("heatmaps/h.png", b"png")
    cache.get("heatmaps/h.png")
    cache.get("heatmaps/h.png")
    assert inner.reads == 2


def test_least_recently_used_objects_are_dropped_within_the_budget(inner: CountingStore) -> None:
    cache = CachingObjectStore(inner, max_bytes=400)  # room for four 100-byte images
    for name in "abcde":
        inner.put(f"images/{name}", name.encode() * 100)
    for name in "abcd":
        cache.get(f"images/{name}")
    cache.get("images/a")  # a becomes the most recently used; b is now the least
    cache.get("images/e")  # over budget: b is dropped
    reads = inner.reads
    for name in "acde":
        cache.get(f"images/{name}")
    assert inner.reads == reads  # all still cached
    cache.get("images/b")
    assert inner.reads == reads + 1  # b was evicted


def test_large_objects_bypass_the_cache_and_zero_disables_it(inner: CountingStore) -> None:
    inner.put("images/big", b"z" * 300)
    cache = CachingObjectStore(inner, max_bytes=1000)  # 300 > 1000 // 4
    cache.get("images/big")
    cache.get("images/big")
    assert inner.reads == 2
    off = CachingObjectStore(inner, max_bytes=0)
    off.get("images/big")
    assert inner.reads == 3


def test_writes_and_deletes_go_through_and_evict(inner: CountingStore) -> None:
    cache = CachingObjectStore(inner, max_bytes=1000)
    cache.put("images/k", b"one")
    assert cache.get("images/k") == b"one"
    cache.put("images/k", b"two")
    assert cache.get("images/k") == b"two"
    cache.delete("images/k")
    with pytest.raises(ObjectNotFound):
        cache.get("images/k")
    assert not cache.exists("images/k")
    assert cache.presign_get("images/k", expires_s=60) is None
    cache.check()
