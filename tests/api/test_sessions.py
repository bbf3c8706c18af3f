"""The viewer's sign-in (``/v1/sessions``): one-time tokens and API keys exchanged for an
HttpOnly, SameSite=Strict cookie acting as the key's tenant; CSRF on every state change with
the cookie; sign-out; Bearer keys unchanged."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.sessions import CSRF_HEADER, SESSION_COOKIE
from core.db.models import ApiKey, BrowserSession, SigninToken, utcnow
from core.services import sessions
from tests.support.api import Api, assert_problem
from tests.support.images import noise_png


def _signin_token(api: Api, tenant: str = "acme") -> str:
    with api.sessions() as session:
        return sessions.create_signin_token(session, api_key=api.key(tenant))


def _fresh_client(api: Api) -> TestClient:
    return TestClient(api.app, base_url="http://testserver")


def test_a_signin_token_opens_a_cookie_session_once(api: Api) -> None:
    token = _signin_token(api)
    browser = _fresh_client(api)
    response = browser.post("/v1/sessions", json={"signin_token": token})
    assert response.status_code == 201, response.text
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=dfc_")
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/" in lowered
    assert "secure" not in lowered  # plain http here; https adds Secure
    body = response.json()
    assert body["tenant"] == "acme" and len(body["csrf_token"]) == 64
    # The cookie acts as the key's tenant: it sees the tenant's comparisons.
    image = api.upload(noise_png())
    mine = api.compare(image["id"], image["id"])
    assert browser.get(f"/v1/comparisons/{mine['id']}").json()["id"] == mine["id"]
    current = browser.get("/v1/sessions/current").json()
    assert current["csrf_token"] == body["csrf_token"]
    # Stored hashed only; a second use of the link is refused.
    with api.sessions() as session:
        stored = session.scalars(sa.select(SigninToken.token_hash)).all()
        assert hashlib.sha256(token.encode()).hexdigest() in stored
        assert token not in stored
        value = browser.cookies[SESSION_COOKIE]
        assert session.scalars(
            sa.select(BrowserSession).where(
                BrowserSession.token_hash == hashlib.sha256(value.encode()).hexdigest()
            )
        ).one()
    again = _fresh_client(api).post("/v1/sessions", json={"signin_token": token})
    assert_problem(again, 401, "signin_token_invalid")


def test_an_expired_signin_token_is_refused(api: Api) -> None:
    token = _signin_token(api)
    with api.sessions() as session, session.begin():
        session.execute(sa.update(SigninToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    response = _fresh_client(api).post("/v1/sessions", json={"signin_token": token})
    assert_problem(response, 401, "signin_token_invalid")


def test_an_api_key_signs_in_and_a_wrong_one_does_not(api: Api) -> None:
    browser = _fresh_client(api)
    wrong = browser.post("/v1/sessions", json={"api_key": "dfa_" + "x" * 43})
    assert_problem(wrong, 401, "unauthorized")
    assert SESSION_COOKIE not in browser.cookies
    assert_problem(browser.post("/v1/sessions", json={}), 422, "validation_error")
    response = browser.post("/v1/sessions", json={"api_key": api.key("other")})
    assert response.status_code == 201
    assert browser.get("/v1/sessions/current").json()["tenant"] == "other"
    # Another tenant's comparison is not found through the cookie.
    image = api.upload(noise_png(seed=1))
    theirs = api.compare(image["id"], image["id"])
    assert_problem(browser.get(f"/v1/comparisons/{theirs['id']}"), 404, "not_found")


def test_state_changes_with_the_cookie_need_the_csrf_token(api: Api) -> None:
    browser = _fresh_client(api)
    csrf = browser.post("/v1/sessions", json={"api_key": api.key()}).json()["csrf_token"]
    files = {"file": ("a.png", noise_png(seed=2), "image/png")}
    assert_problem(browser.post("/v1/images", files=files), 403, "csrf_failed")
    wrong = browser.post("/v1/images", files=files, headers={CSRF_HEADER: "0" * 64})
    assert_problem(wrong, 403, "csrf_failed")
    other_site = browser.post(
        "/v1/images", files=files, headers={CSRF_HEADER: csrf, "Origin": "https://evil.example"}
    )
    assert_problem(other_site, 403, "csrf_failed")
    ok = browser.post(
        "/v1/images", files=files, headers={CSRF_HEADER: csrf, "Origin": "http://testserver"}
    )
    assert ok.status_code in (200, 201), ok.text
    # Reads need no token; Bearer keys need none either (the API is unchanged).
    assert browser.get("/v1/comparisons").status_code == 200
    bearer = _fresh_client(api).post("/v1/images", files=files, headers=api.auth())
    assert bearer.status_code in (200, 201)


def test_sign_out_ends_the_session(api: Api) -> None:
    browser = _fresh_client(api)
    csrf = browser.post("/v1/sessions", json={"api_key": api.key()}).json()["csrf_token"]
    value = browser.cookies[SESSION_COOKIE]
    assert_problem(browser.delete("/v1/sessions/current"), 403, "csrf_failed")
    out = browser.delete("/v1/sessions/current", headers={CSRF_HEADER: csrf})
    assert out.status_code == 204
    assert "max-age=0" in out.headers["set-cookie"].lower()
    replay = _fresh_client(api)
    replay.cookies.set(SESSION_COOKIE, value)
    assert_problem(replay.get("/v1/comparisons"), 401, "unauthorized")


def test_revoking_the_key_ends_its_sessions(api: Api) -> None:
    browser = _fresh_client(api)
    browser.post("/v1/sessions", json={"api_key": api.key("short-lived")})
    assert browser.get("/v1/comparisons").status_code == 200
    with api.sessions() as session, session.begin():
        session.execute(
            sa.update(ApiKey)
            .where(ApiKey.key_hash == hashlib.sha256(api.key("short-lived").encode()).hexdigest())
            .values(revoked_at=utcnow())
        )
    assert_problem(browser.get("/v1/comparisons"), 401, "unauthorized")
    assert_problem(browser.get("/v1/sessions/current"), 401, "unauthorized")


def test_a_bearer_key_is_not_a_session(api: Api) -> None:
    assert_problem(
        _fresh_client(api).get("/v1/sessions/current", headers=api.auth()), 401, "unauthorized"
    )
