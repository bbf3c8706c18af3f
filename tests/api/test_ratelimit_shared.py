"""The per-key rate limit shared through Redis: every API process draws from one bucket.

Real Redis (the session's claimed test database); two limiters or two apps stand for two API
processes behind a load balancer.
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from api.main import make_rate_limiter
from api.ratelimit import REDIS_PREFIX, SharedTokenBucketLimiter, TokenBucketLimiter
from tests.support.api import ApiFactory, assert_problem, make_settings
from tests.support.brokers import REDIS_HOST, REDIS_PORT


def _url(client: redis.Redis) -> str:
    number = client.connection_pool.connection_kwargs["db"]
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}"


def test_two_processes_share_one_bucket(redis_db: redis.Redis) -> None:
    first = SharedTokenBucketLimiter.from_url(_url(redis_db), rate_per_minute=60)
    second = SharedTokenBucketLimiter.from_url(_url(redis_db), rate_per_minute=60)
    key = uuid.uuid4().hex
    try:
        # 60 tokens in all, whichever process takes them (plus what refilled on Redis's clock
        # while the burst ran: one per second at 60 per minute).
        started = time.monotonic()
        granted = 0
        while (first if granted % 2 else second).acquire(key) == 0.0:
            granted += 1
            assert granted <= 200, "never refused"
        elapsed = time.monotonic() - started
        assert 60 <= granted <= 60 + elapsed + 1
        wait = first.acquire(key)
        assert 0.0 < wait <= 1.0  # the next token is at most a second away
        assert second.acquire(key) > 0.0  # refused by the other process too
        assert first.acquire(uuid.uuid4().hex) == 0.0  # buckets are per key
        # The bucket lives in Redis, expiring once it would be full again (<= 60 s).
        ttl_ms = redis_db.pttl(REDIS_PREFIX + key)
        assert 0 < ttl_ms <= 61_000
        time.sleep(wait + 0.05)
        assert second.acquire(key) == 0.0  # refilled at the rate
        assert first.acquire(key) > 0
    finally:
        first.close()
        second.close()


def test_a_burst_smaller_than_the_rate(redis_db: redis.Redis) -> None:
    client = redis.Redis.from_url(_url(redis_db))
    limiter = SharedTokenBucketLimiter(client, rate_per_minute=600, burst=2)
    key = uuid.uuid4().hex
    try:
        assert [limiter.acquire(key) for _ in range(2)] == [0.0, 0.0]
        assert 0.0 < limiter.acquire(key) <= 0.1  # 10 tokens per second
    finally:
        limiter.close()


def test_redis_down_falls_back_to_local_buckets_without_waiting() -> None:
    # A "Redis" that accepts connections and never answers: every command costs the 0.25 s
    # timeout, so asking it on every request would be seen in the time taken.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        now = [0.0]
        client = redis.Redis(
            host="127.0.0.1",
            port=port,
            socket_timeout=0.25,
            socket_connect_timeout=0.25,
            retry=Retry(NoBackoff(), 0),
        )
        limiter = SharedTokenBucketLimiter(
            client, rate_per_minute=3, fallback_s=5.0, clock=lambda: now[0]
        )
        started = time.monotonic()
        # Still limited (this process's buckets) ...
        assert [limiter.acquire("k") for _ in range(3)] == [0.0] * 3
        assert limiter.acquire("k") > 0
        # ... and Redis was asked once (one timeout), not four times.
        assert 0.2 <= time.monotonic() - started < 0.7
        now[0] += 6.0  # after the fallback period Redis is tried again (still silent)
        started = time.monotonic()
        assert limiter.acquire("other") == 0.0
        assert time.monotonic() - started >= 0.2
        limiter.close()
        # The API's own construction has the same bounds (no redis-py retries: ~7 s each).
        made = SharedTokenBucketLimiter.from_url(f"redis://127.0.0.1:{port}/0", rate_per_minute=3)
        started = time.monotonic()
        assert [made.acquire("k") for _ in range(3)] == [0.0] * 3
        assert time.monotonic() - started < 0.7
        made.close()


def test_the_limiter_follows_the_broker(tmp_path: object, redis_db: redis.Redis) -> None:
    shared = make_rate_limiter(
        make_settings(
            data_dir=tmp_path,  # type: ignore[arg-type]
            database_url="sqlite://",
            broker_url=_url(redis_db),
        )
    )
    local = make_rate_limiter(
        make_settings(
            data_dir=tmp_path,  # type: ignore[arg-type]
            database_url="sqlite://",
            broker_url="filesystem://",
        )
    )
    assert isinstance(shared, SharedTokenBucketLimiter)
    assert isinstance(local, TokenBucketLimiter)
    shared.close()


def test_two_api_processes_enforce_one_limit(make_api: ApiFactory, sqlite_url: str) -> None:
    one = make_api(sqlite_url, rate_limit_per_minute=3)
    two = make_api(sqlite_url, rate_limit_per_minute=3)
    headers = one.auth("shared")
    assert one.client.get("/v1/comparisons", headers=headers).status_code == 200
    assert two.client.get("/v1/comparisons", headers=headers).status_code == 200
    assert one.client.get("/v1/comparisons", headers=headers).status_code == 200
    limited = two.client.get("/v1/comparisons", headers=headers)
    body = assert_problem(limited, 429, "rate_limited")
    assert 1 <= body["retry_after_s"] <= 20


@pytest.mark.parametrize("rate", [1, 600])
def test_capacity_is_the_rate_by_default(redis_db: redis.Redis, rate: int) -> None:
    now = [5_000.0]
    limiter = SharedTokenBucketLimiter.from_url(
        _url(redis_db), rate_per_minute=rate, bucket_clock=lambda: now[0]
    )
    key = uuid.uuid4().hex
    try:
        # On a clock that stands still during the burst (the test moves it), a full bucket
        # grants ``rate`` at once, plus what refilled during the burst (nothing), then refuses.
        granted = 0
        while limiter.acquire(key) == 0.0:
            granted += 1
            assert granted <= 2 * rate + 10, "the limiter never refused"
        refilled = 0.0
        assert rate <= granted <= rate + refilled + 1
        assert granted == rate
        wait = limiter.acquire(key)
        assert wait == pytest.approx(60 / rate, abs=1e-3)  # the next token, exactly one period
        now[0] += wait
        assert limiter.acquire(key) == 0.0  # refilled at the rate
        assert limiter.acquire(key) > 0.0
    finally:
        limiter.close()


def test_broker_options_in_the_url_do_not_break_the_limiter(redis_db: redis.Redis) -> None:
    # Broker URLs may carry kombu options redis-py does not take: they are left out.
    url = _url(redis_db) + "?ssl_cert_reqs=required&foo=bar"
    limiter = SharedTokenBucketLimiter.from_url(url, rate_per_minute=2)
    key = uuid.uuid4().hex
    try:
        assert [limiter.acquire(key) for _ in range(2)] == [0.0, 0.0]
        assert limiter.acquire(key) > 0
        assert redis_db.exists(REDIS_PREFIX + key)  # the shared bucket, not the fallback
    finally:
        limiter.close()


def test_times_are_kept_to_the_microsecond(redis_db: redis.Redis) -> None:
    # At 2,000,000 per minute a token is 30 us: Lua's tostring (14 digits, 0.1 ms of a Unix
    # time) would store a time that never advances, and nothing would ever be refused.
    limiter = SharedTokenBucketLimiter.from_url(_url(redis_db), rate_per_minute=2_000_000)
    try:
        # The bucket lives 2 ms at this rate: a loaded machine may read it too late, so try
        # a few fresh keys until one read lands in time.
        stored = None
        for _ in range(200):
            key = uuid.uuid4().hex
            assert limiter.acquire(key) == 0.0
            stored = redis_db.get(REDIS_PREFIX + key)
            if stored is not None:
                break
        assert stored is not None
        whole, fraction = stored.decode().split(".")
        assert len(fraction) == 6 and int(whole) > 1_700_000_000
    finally:
        limiter.close()
