"""Failed authentication is limited per client address (429 ``too_many_failed_logins``).

The real app on SQLite and PostgreSQL with the shared (Redis) limiter, its buckets on a clock the
test moves, and the in-process limiter with an injected clock. A refused request is answered
before its key is looked at.
"""

from __future__ import annotations

import math
import secrets

import pytest
from sqlalchemy import event

from api.ratelimit import (
    AUTH_FAILURE_PREFIX,
    REDIS_PREFIX,
    SharedTokenBucketLimiter,
    TokenBucketLimiter,
)
from tests.support.api import Api, ApiFactory, TestClient, assert_problem

LIMIT = 30


def _wrong_key() -> dict[str, str]:
    return {"Authorization": f"Bearer dfa_{secrets.token_urlsafe(24)}"}


def test_700_wrong_keys_are_refused_after_the_limit(
    make_api: ApiFactory, database_url: str
) -> None:
    api = make_api(database_url, failed_auth_per_minute=LIMIT)
    # The app's limiter is the shared (Redis) one at LIMIT per minute; the test puts in its
    # place the same limiter on a clock it moves, so no refill depends on the machine's speed.
    built = api.app.state.auth_failure_limiter
    assert isinstance(built, SharedTokenBucketLimiter) and built.interval_s == 60 / LIMIT
    now = [1_000.0]
    api.app.state.auth_failure_limiter = SharedTokenBucketLimiter.from_url(
        api.settings.broker_url, rate_per_minute=LIMIT, bucket_clock=lambda: now[0]
    )
    built.close()
    good = api.auth()
    elapsed_s = 0.0  # on the limiter's clock: it does not move during the burst
    statuses = [
        api.client.get("/v1/comparisons", headers=_wrong_key()).status_code for _ in range(700)
    ]
    assert statuses[: LIMIT + 1] == [401] * LIMIT + [429]
    assert set(statuses) == {401, 429}
    # Beyond the burst, one more failure per 60/LIMIT s of the run (the bucket refills).
    assert statuses.count(401) <= LIMIT + math.ceil(elapsed_s * LIMIT / 60) + 1
    assert statuses.count(401) == LIMIT
    now[0] += 60 / LIMIT  # one token refilled: one more failure is let through, then 429
    assert api.client.get("/v1/comparisons", headers=_wrong_key()).status_code == 401

    refused = api.client.get("/v1/comparisons", headers=_wrong_key())
    body = assert_problem(refused, 429, "too_many_failed_logins")
    retry = int(refused.headers["Retry-After"])
    assert 1 <= retry <= 60 // LIMIT + 1  # one failure allowed back every 2 s at 30/min
    assert body["retry_after_s"] == retry
    # The bucket is in Redis (every API process shares it), under the address.
    assert api.broker.exists(REDIS_PREFIX + AUTH_FAILURE_PREFIX + "testclient")

    # A good key from this address is refused too (the key is not checked) ...
    assert_problem(api.client.get("/v1/comparisons", headers=good), 429, "too_many_failed_logins")
    # ... and from another address it works, as do that address's own first failures.
    other = TestClient(api.app, client=("203.0.113.7", 40000))
    assert other.get("/v1/comparisons", headers=good).status_code == 200
    assert_problem(other.get("/v1/comparisons", headers=_wrong_key()), 401, "unauthorized")


def test_refused_guesses_never_reach_the_database(make_api: ApiFactory, sqlite_url: str) -> None:
    api = make_api(sqlite_url, failed_auth_per_minute=2)
    for _ in range(2):
        assert api.client.get("/v1/comparisons", headers=_wrong_key()).status_code == 401
    statements: list[str] = []
    engine = api.app.state.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        for _ in range(20):
            assert api.client.get("/v1/comparisons", headers=_wrong_key()).status_code == 429
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert statements == []


def test_successful_requests_are_not_counted(make_api: ApiFactory, sqlite_url: str) -> None:
    api = make_api(sqlite_url, failed_auth_per_minute=3, rate_limit_per_minute=1000)
    for _ in range(50):
        assert api.client.get("/v1/comparisons", headers=api.auth()).status_code == 200
    assert [
        api.client.get("/v1/comparisons", headers=_wrong_key()).status_code for _ in range(4)
    ] == [401, 401, 401, 429]


def test_in_process_limiter_refills_with_time(make_api: ApiFactory, sqlite_url: str) -> None:
    api: Api = make_api(sqlite_url)
    now = [1000.0]
    api.app.state.auth_failure_limiter = TokenBucketLimiter(
        rate_per_minute=6, clock=lambda: now[0]
    )  # the embedded default's kind of limiter, on a clock the test moves
    assert [
        api.client.get("/v1/comparisons", headers=_wrong_key()).status_code for _ in range(7)
    ] == [401] * 6 + [429]
    refused = api.client.get("/v1/comparisons", headers=_wrong_key())
    assert refused.headers["Retry-After"] == "10"  # one failure back every 10 s
    now[0] += 9.9
    assert api.client.get("/v1/comparisons", headers=_wrong_key()).status_code == 429
    now[0] += 0.2
    assert api.client.get("/v1/comparisons", headers=_wrong_key()).status_code == 401
    assert api.client.get("/v1/comparisons", headers=_wrong_key()).status_code == 429


def test_peek_takes_nothing() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(rate_per_minute=60, burst=2, clock=lambda: now[0])
    assert limiter.peek("k") == 0.0
    assert [limiter.acquire("k") for _ in range(2)] == [0.0, 0.0]
    assert limiter.peek("k") == pytest.approx(1.0)
    assert limiter.peek("k") == pytest.approx(1.0)  # looking twice takes nothing
    now[0] = 1.0
    assert limiter.peek("k") == 0.0
    assert limiter.acquire("k") == 0.0
    assert limiter.peek("k") > 0


def test_viewer_sign_in_guesses_count_too(make_api: ApiFactory, sqlite_url: str) -> None:
    # POST /v1/sessions checks a key or a sign-in token: guessing there is limited like a
    # Bearer key (and a guessed key there counts for the address's other requests).
    api = make_api(sqlite_url, failed_auth_per_minute=3)
    guesses = [
        {"api_key": f"dfa_{secrets.token_urlsafe(24)}"},
        {"signin_token": f"dfs_{secrets.token_urlsafe(24)}"},
        {"api_key": f"dfa_{secrets.token_urlsafe(24)}"},
    ]
    for guess in guesses:
        assert api.client.post("/v1/sessions", json=guess).status_code == 401
    refused = api.client.post("/v1/sessions", json={"api_key": api.key()})
    body = assert_problem(refused, 429, "too_many_failed_logins")
    assert int(refused.headers["retry-after"]) >= 1 and body["retry_after_s"] >= 1
    assert_problem(
        api.client.get("/v1/comparisons", headers=_wrong_key()), 429, "too_many_failed_logins"
    )


def test_requests_without_credentials_are_not_guesses(
    make_api: ApiFactory, sqlite_url: str
) -> None:
    # The viewer asks GET /v1/sessions/current on every page load before anyone signed in:
    # no key and no cookie is refused (401) but never locks the address out.
    api = make_api(sqlite_url, failed_auth_per_minute=3)
    for _ in range(20):
        assert_problem(api.client.get("/v1/sessions/current"), 401, "unauthorized")
        assert_problem(api.client.get("/v1/comparisons"), 401, "unauthorized")
    assert api.client.get("/v1/comparisons", headers=api.auth()).status_code == 200
    for _ in range(3):  # a presented wrong key still counts
        assert api.client.get("/v1/comparisons", headers=_wrong_key()).status_code == 401
    assert_problem(
        api.client.get("/v1/comparisons", headers=_wrong_key()), 429, "too_many_failed_logins"
    )
