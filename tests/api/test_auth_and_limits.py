"""API keys (401 with ``WWW-Authenticate: Bearer``) and the per-key rate limit (429)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from api.deps import parse_bearer
from core.db.models import ApiKey, utcnow
from core.services.errors import Unauthorized
from tests.support.api import Api, ApiFactory, assert_problem


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer a b", "Bearer é"],
)
def test_parse_bearer_refuses_malformed_headers(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        parse_bearer(header)


def test_parse_bearer_accepts_any_case_of_the_scheme() -> None:
    assert parse_bearer("Bearer dfa_abc") == "dfa_abc"
    assert parse_bearer("bearer  dfa_abc ") == "dfa_abc"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer dfa_" + "x" * 43},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "unknown", "basic", "empty"],
)
def test_requests_without_a_valid_key_are_401(sqlite_api: Api, headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/v1/comparisons"),
        ("POST", "/v1/images/presign"),
        ("GET", "/v1/batches/00000000-0000-0000-0000-000000000000"),
    ]:
        response = sqlite_api.client.request(method, path, headers=headers)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_revoked_key_is_401(api: Api) -> None:
    key = api.key("revoked-tenant")
    assert api.client.get("/v1/comparisons", headers=api.auth("revoked-tenant")).status_code == 200
    with api.sessions() as session, session.begin():
        session.execute(sa.update(ApiKey).values(revoked_at=utcnow()))
    response = api.client.get("/v1/comparisons", headers={"Authorization": f"Bearer {key}"})
    assert_problem(response, 401, "unauthorized")


def test_rate_limit_per_key_is_429_with_retry_after(make_api: ApiFactory, sqlite_url: str) -> None:
    api = make_api(sqlite_url, rate_limit_per_minute=3)
    for _ in range(3):
        assert api.client.get("/v1/comparisons", headers=api.auth()).status_code == 200
    limited = api.client.get("/v1/comparisons", headers=api.auth())
    body = assert_problem(limited, 429, "rate_limited")
    retry_after = int(limited.headers["retry-after"])
    assert 1 <= retry_after <= 20  # one token every 20 s at 3 per minute
    assert body["retry_after_s"] == retry_after
    # Other keys have their own budget; health checks are not limited.
    assert api.client.get("/v1/comparisons", headers=api.auth("other")).status_code == 200
    assert all(api.client.get("/healthz").status_code == 200 for _ in range(5))
