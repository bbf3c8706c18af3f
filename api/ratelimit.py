"""Per-API-key rate limiting: a token bucket per key, kept in this process's memory.

The limit is ``settings.limits.rate_limit_per_minute`` requests per key and per API process:
each key's bucket holds at most that many tokens (the burst) and refills continuously at
``rate / 60`` tokens per second. With N API processes behind a load balancer a key can make up
to N times the limit; a shared limiter (Redis) would be the next step if that matters.

Buckets are keyed by the SHA-256 of the API key (the key itself is never kept), and the least
recently used buckets are forgotten beyond ``max_keys`` (a forgotten bucket comes back full,
which is what an idle key would have anyway once a minute has passed).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["TokenBucketLimiter"]


class TokenBucketLimiter:
    """Thread-safe token buckets, one per key.

    Parameters
    ----------
    rate_per_minute
        Tokens added per minute (>= 1); also the bucket capacity unless ``burst`` is given.
    burst
        Bucket capacity in tokens (>= 1); None means ``rate_per_minute``.
    max_keys
        Most buckets kept in memory (>= 1).
    clock
        Monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(
        self,
        *,
        rate_per_minute: int,
        burst: int | None = None,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_minute < 1:
            raise ValueError("rate_per_minute must be >= 1")
        capacity = rate_per_minute if burst is None else burst
        if capacity < 1:
            raise ValueError("burst must be >= 1")
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.rate_per_s = rate_per_minute / 60.0
        self.capacity = float(capacity)
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (tokens, time of last update)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, key: str) -> float:
        """Take one token from ``key``'s bucket.

        Parameters
        ----------
        key
            The bucket's key (a hash of the API key, never the key).

        Returns
        -------
        float
            0.0 when the request is allowed; otherwise the seconds (> 0) until a token is
            available, and no token was taken.
        """
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + max(0.0, now - last) * self.rate_per_s)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / self.rate_per_s
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait_s: float) -> int:
        """Whole seconds for a ``Retry-After`` header: ``ceil(wait_s)``, at least 1.

        Parameters
        ----------
        wait_s
            Seconds to wait, >= 0.

        Returns
        -------
        int
            Seconds, >= 1.
        """
        return max(1, math.ceil(wait_s))
