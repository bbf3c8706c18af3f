"""A read cache in front of an ObjectStore, for immutable, content-addressed objects.

Images are stored once under ``images/<sha256>``: a key's bytes never change, so a worker that
compares many candidates against one baseline (or reruns a pair) can keep recent images in memory
with no invalidation protocol. Writes and deletes through the cache evict the key, and only keys
under the given prefixes are cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import BinaryIO

from core.storage.base import ObjectStore


class CachingObjectStore:
    """``ObjectStore`` that keeps the most recently read objects under ``prefixes`` in memory.

    Parameters
    ----------
    inner
        The store that holds the objects.
    max_bytes
        Memory budget of the cache in bytes (least recently used objects are dropped first);
        an object larger than a quarter of it is never cached. 0 disables caching.
    prefixes
        Key prefixes of immutable objects (default: ``images/``).
    """

    def __init__(
        self, inner: ObjectStore, *, max_bytes: int, prefixes: tuple[str, ...] = ("images/",)
    ) -> None:
        self.inner = inner
        self.max_bytes = max_bytes
        self.prefixes = prefixes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> bytes:
        """The object's bytes, from memory when cached."""
        cacheable = key.startswith(self.prefixes) and self.max_bytes > 0
        if cacheable:
            with self._lock:
                data = self._items.get(key)
                if data is not None:
                    self._items.move_to_end(key)
                    self.hits += 1
                    return data
                self.misses += 1
        data = self.inner.get(key)
        if cacheable and len(data) <= self.max_bytes // 4:
            with self._lock:
                if key not in self._items:
                    self._items[key] = data
                    self._bytes += len(data)
                while self._bytes > self.max_bytes:
                    _, dropped = self._items.popitem(last=False)
                    self._bytes -= len(dropped)
        return data

    def _evict(self, key: str) -> None:
        with self._lock:
            dropped = self._items.pop(key, None)
            if dropped is not None:
                self._bytes -= len(dropped)

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Write through to the inner store (evicting any cached copy)."""
        self._evict(key)
        self.inner.put(key, data, content_type=content_type)

    def put_file(
        self, key: str, file: BinaryIO, *, content_type: str = "application/octet-stream"
    ) -> None:
        """Write a file through to the inner store (evicting any cached copy)."""
        self._evict(key)
        self.inner.put_file(key, file, content_type=content_type)

    def delete(self, key: str) -> None:
        """Delete from the inner store and the cache."""
        self._evict(key)
        self.inner.delete(key)

    def exists(self, key: str) -> bool:
        """Whether the inner store holds ``key``."""
        return self.inner.exists(key)

    def size(self, key: str) -> int:
        """Size in bytes, from the inner store."""
        return self.inner.size(key)

    def presign_put(self, key: str, *, expires_s: int, content_type: str) -> str | None:
        """The inner store's presigned PUT URL."""
        return self.inner.presign_put(key, expires_s=expires_s, content_type=content_type)

    def presign_get(self, key: str, *, expires_s: int) -> str | None:
        """The inner store's presigned GET URL."""
        return self.inner.presign_get(key, expires_s=expires_s)

    def check(self) -> None:
        """The inner store's readiness check."""
        self.inner.check()
