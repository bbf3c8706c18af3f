"""Per-API-key rate limiting: a token bucket per key.

The limit is ``settings.limits.rate_limit_per_minute`` requests per key: each key's bucket holds
at most that many tokens (the burst) and refills continuously at ``rate / 60`` tokens per second.

- :class:`SharedTokenBucketLimiter` keeps the buckets in Redis (the broker's database), so every
  API process behind a load balancer draws from the same bucket: the limit holds per key for the
  whole deployment. One Lua script does the check and the update atomically (GCRA: the bucket is
  one "theoretical arrival time" per key, on Redis's clock, expiring when full again). If Redis
  cannot be reached, the process falls back to its own buckets for a few seconds rather than
  refusing or slowing every request.
- :class:`TokenBucketLimiter` keeps them in this process's memory: the embedded default (no
  Redis), and the fallback above. With N processes a key could make up to N times the limit.

Both limiters can also :meth:`~RateLimiter.peek` (is a token available? nothing taken): the
failed-authentication limit asks before checking a key and takes a token only when the check
failed, so refused guesses cost one bucket lookup and successful requests nothing.

Buckets are keyed by the SHA-256 of the API key (the key itself is never kept); the in-memory
limiter forgets the least recently used buckets beyond ``max_keys`` (a forgotten bucket comes back
full, which is what an idle key would have anyway once a minute has passed).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, Protocol
from urllib.parse import urlsplit

import redis
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "AUTH_FAILURE_PREFIX",
    "RateLimiter",
    "SharedTokenBucketLimiter",
    "TokenBucketLimiter",
    "retry_after",
]

log = structlog.get_logger(__name__)

#: Prefix of the bucket keys in Redis.
REDIS_PREFIX: Final = "diffall:ratelimit:"
#: Prefix, under :data:`REDIS_PREFIX`, of the failed-authentication buckets (per client address).
AUTH_FAILURE_PREFIX: Final = "authfail:"
#: Seconds a Redis-backed limiter uses its in-memory fallback after Redis failed.
FALLBACK_S: Final = 5.0
#: Seconds to wait for Redis before falling back (connect and each command).
REDIS_TIMEOUT_S: Final = 0.25

# GCRA on Redis's clock. KEYS[1]: the bucket; ARGV[1]: seconds per token; ARGV[2]: capacity;
# ARGV[3]: "1" to only look (no token taken, nothing written), else "0"; ARGV[4]: "" for Redis's
# clock (TIME), else the time in seconds (an injected clock). Returns "0" (allowed: the token is
# taken, or only looked at) or the seconds until a token is available, as text (a Lua number
# returned to Redis would be truncated to an integer; tostring keeps only 14 digits, 0.1 ms of a
# Unix time, so times are formatted to the microsecond).
_GCRA: Final = """
local now
if ARGV[4] == nil or ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[4])
end
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - capacity * interval
if now < allow_at then return string.format('%.6f', allow_at - now) end
if ARGV[3] == '1' then return '0' end
local ttl_ms = math.ceil((new_tat - now) * 1000) + 1
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', ttl_ms)
return '0'
"""


class RateLimiter(Protocol):
    """What the API asks of a limiter."""

    def acquire(self, key: str) -> float:
        """Take one token of ``key``'s bucket: 0.0 if allowed, else the seconds to wait."""
        ...

    def peek(self, key: str) -> float:
        """Like :meth:`acquire` without taking the token: 0.0 if one is available."""
        ...

    def close(self) -> None:
        """Release connections (the app's shutdown)."""
        ...


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
        return self._take(key, take=True)

    def peek(self, key: str) -> float:
        """Seconds until ``key``'s bucket has a token (0.0: it has one now); nothing is taken.

        Parameters
        ----------
        key
            The bucket's key.

        Returns
        -------
        float
            0.0 when :meth:`acquire` would allow a request now, else the seconds (> 0) to wait.
        """
        return self._take(key, take=False)

    def _take(self, key: str, *, take: bool) -> float:
        """Refill ``key``'s bucket to now, then take a token when ``take`` and one is there."""
        now = self._clock()
        with self._lock:
            if not take and key not in self._buckets:
                return 0.0  # a bucket never used is full; do not create one to look
            tokens, last = self._buckets.pop(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + max(0.0, now - last) * self.rate_per_s)
            if tokens >= 1.0:
                tokens -= 1.0 if take else 0.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / self.rate_per_s
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait

    def close(self) -> None:
        """Nothing to release."""


class SharedTokenBucketLimiter:
    """Token buckets in Redis, shared by every API process using the same Redis database.

    Parameters
    ----------
    client
        A Redis client; its timeouts and retries bound how long a request can wait for the
        limiter when Redis hangs (:meth:`from_url` makes one with 0.25 s and no retry).
    rate_per_minute
        Tokens added per minute (>= 1); also the bucket capacity unless ``burst`` is given.
    burst
        Bucket capacity in tokens (>= 1); None means ``rate_per_minute``.
    fallback_s
        Seconds the in-memory fallback is used after a Redis error (> 0).
    clock
        Monotonic clock for the fallback period, in seconds (tests pass a fake one).
    bucket_clock
        Clock of the buckets, in seconds; None (the default, and what every API process must
        use to share buckets) is Redis's own clock (``TIME``). Tests pass one they move, so
        that refills depend on the time they set, not on how fast the machine is.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        rate_per_minute: int,
        burst: int | None = None,
        fallback_s: float = FALLBACK_S,
        clock: Callable[[], float] = time.monotonic,
        bucket_clock: Callable[[], float] | None = None,
    ) -> None:
        self.fallback = TokenBucketLimiter(rate_per_minute=rate_per_minute, burst=burst)
        if not fallback_s > 0:
            raise ValueError("fallback_s must be positive")
        self.interval_s = 60.0 / rate_per_minute
        self.capacity = int(self.fallback.capacity)
        self.fallback_s = fallback_s
        self._client = client
        self._script = client.register_script(_GCRA)
        self._clock = clock
        self._bucket_clock = bucket_clock
        self._fallback_until = float("-inf")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        rate_per_minute: int,
        burst: int | None = None,
        bucket_clock: Callable[[], float] | None = None,
    ) -> SharedTokenBucketLimiter:
        """A limiter on the Redis database at ``url`` (the broker's), with short timeouts.

        The URL's query (broker options such as kombu's ``ssl_cert_reqs``, which redis-py
        spells differently or not at all) is left out: host, port, database, credentials and
        ``rediss://`` (TLS) are what the limiter needs.
        """
        client = redis.Redis.from_url(
            urlsplit(url)._replace(query="", fragment="").geturl(),
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),  # redis-py's default retries would wait ~7 s
        )
        return cls(client, rate_per_minute=rate_per_minute, burst=burst, bucket_clock=bucket_clock)

    def acquire(self, key: str) -> float:
        """Take one token from ``key``'s shared bucket (see :meth:`TokenBucketLimiter.acquire`).

        Falls back to this process's buckets for ``fallback_s`` seconds when Redis fails.
        """
        return self._run(key, take=True)

    def peek(self, key: str) -> float:
        """Seconds until ``key``'s shared bucket has a token; nothing taken (see
        :meth:`TokenBucketLimiter.peek`)."""
        return self._run(key, take=False)

    def _run(self, key: str, *, take: bool) -> float:
        """The GCRA script on Redis (or the in-memory fallback while Redis is away)."""
        if self._clock() < self._fallback_until:
            return self.fallback.acquire(key) if take else self.fallback.peek(key)
        try:
            answer = self._script(
                keys=[REDIS_PREFIX + key],
                args=[
                    self.interval_s,
                    self.capacity,
                    "0" if take else "1",
                    "" if self._bucket_clock is None else f"{self._bucket_clock():.6f}",
                ],
            )
        except Exception as exc:  # Redis down, or misconfigured: limit locally, never fail
            self._fallback_until = self._clock() + self.fallback_s
            log.warning(
                "ratelimit.redis_unavailable",
                error=f"{type(exc).__name__}: {exc}",
                fallback_s=self.fallback_s,
            )
            return self.fallback.acquire(key) if take else self.fallback.peek(key)
        return float(answer.decode() if isinstance(answer, bytes) else answer)

    def close(self) -> None:
        """Close the Redis connections."""
        self._client.close()
