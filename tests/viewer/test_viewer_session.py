"""The viewer's sign-in in a real Chromium against a real `diffall serve` (embedded default):
the banner's one-time link, a key typed in, cookies and CSRF, a late 401, the strict content
policy of its files, a wrong key and another tenant's address.

Screenshots go to ``$DIFFALL_TEST_ARTIFACTS/viewer`` (default: the test session's temporary
directory; the path is printed).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import ROOT
from tests.support.viewer import UI_TIMEOUT_MS, Served, session_cookie

pytestmark = pytest.mark.slow

playwright_api = pytest.importorskip("playwright.sync_api")


SAMPLES = ROOT / "samples"


def test_the_banner_link_signs_in_once_and_sign_out_ends_the_session(
    browser: Any, served: Served, artifacts: Path
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    tab = context.new_page()
    tab.goto(served.signin_url)
    playwright_api.expect(tab.locator("#signed-in")).to_have_text("Signed in as local")
    playwright_api.expect(tab.locator("#key-dialog")).not_to_have_attribute("open", "")
    # The token is gone from the address bar; the secret is an HttpOnly, SameSite=Strict
    # cookie the page cannot read, and nothing is kept in storage.
    assert tab.url == served.base_url + "/"
    assert "signin" not in tab.evaluate("location.href")
    cookie = session_cookie(context)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain http on this machine; https adds Secure
    assert "diffall_session" not in tab.evaluate("document.cookie")
    assert tab.evaluate("sessionStorage.length + localStorage.length") == 0
    tab.screenshot(path=artifacts / "signed-in-by-link.png")

    # The cookie is the local tenant's, for the /v1 API; a state change without the CSRF
    # token is refused (the page's own calls send it).
    listed = tab.evaluate("fetch('/v1/comparisons?limit=1').then(r => r.status)")
    assert listed == 200
    refused = tab.evaluate(
        """async () => {
            const form = new FormData();
            form.append("file", new Blob(["x"]), "x.png");
            const r = await fetch("/v1/images", {method: "POST", body: form});
            return [r.status, (await r.json()).code];
        }"""
    )
    assert refused == [403, "csrf_failed"]
    stolen = {"diffall_session": cookie["value"]}
    with httpx.Client(base_url=served.base_url, cookies=stolen, timeout=20) as http:
        delete = http.delete("/v1/sessions/current")
        assert (delete.status_code, delete.json()["code"]) == (403, "csrf_failed")

    tab.get_by_role("button", name="Sign out").click()
    playwright_api.expect(tab.locator("#key-dialog")).to_have_attribute("open", "")
    playwright_api.expect(tab.locator("#signed-in")).to_have_text("")
    assert not [c for c in context.cookies() if c["name"] == "diffall_session"]
    with httpx.Client(base_url=served.base_url, cookies=stolen, timeout=20) as http:
        after = http.get("/v1/comparisons")
        assert (after.status_code, after.json()["code"]) == (401, "unauthorized")
    context.close()

    # The link works once.
    context = browser.new_context()
    context.set_default_timeout(UI_TIMEOUT_MS)
    again = context.new_page()
    again.goto(served.signin_url)
    playwright_api.expect(again.locator("#key-error")).to_contain_text("(signin_token_invalid)")
    again.wait_for_timeout(1000)  # the page's other calls (401) must not replace the message
    playwright_api.expect(again.locator("#key-error")).to_contain_text("(signin_token_invalid)")
    assert again.url == served.base_url + "/"
    again.screenshot(path=artifacts / "signin-link-used.png")
    context.close()


def test_signing_in_with_a_key_sets_the_session_cookie(page: Any, served: Served) -> None:
    cookie = session_cookie(page.context)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("sessionStorage.length + localStorage.length") == 0
    assert served.key not in page.content()
    session = {"diffall_session": cookie["value"]}
    with httpx.Client(base_url=served.base_url, cookies=session, timeout=20) as http:
        me = http.get("/v1/sessions/current")
        assert me.json()["tenant"] == "local"


def test_a_late_401_from_before_signing_in_does_not_sign_the_page_out(
    browser: Any, served: Served, artifacts: Path
) -> None:
    """A result address opened signed out asks for the comparison (401); when that answer
    arrives after the user signed in, the new session stays and the key typed is kept."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    held: list[Any] = []  # asked for signed out, answered only once signed in
    tab.route("**/v1/comparisons/*", lambda route: held.append(route))
    tab.goto(f"{served.base_url}/c/{uuid.uuid4()}")
    for _ in range(UI_TIMEOUT_MS // 100):  # Playwright runs the route handler while it waits
        if held:
            break
        tab.wait_for_timeout(100)
    assert held, "the result page never asked for its comparison"
    tab.route("**/v1/comparisons/*", lambda route: route.continue_())  # from now on: real answers
    tab.get_by_label("API key", exact=True).fill(served.key)
    tab.get_by_role("button", name="Sign in with this key").click()
    playwright_api.expect(tab.locator("#signed-in")).to_have_text(re.compile("^Signed in as "))
    held[0].fulfill(
        status=401,
        content_type="application/problem+json",
        body='{"code": "unauthorized", "detail": "sent before signing in", "status": 401}',
    )
    tab.wait_for_timeout(1000)  # time for the late answer to be handled
    playwright_api.expect(tab.locator("#signed-in")).to_have_text(re.compile("^Signed in as "))
    playwright_api.expect(tab.locator("#key-dialog")).not_to_have_attribute("open", "")
    tab.screenshot(path=artifacts / "late-401-after-sign-in.png")
    context.close()
    assert not errors, errors


def test_viewer_files_are_served_with_a_strict_policy(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=20) as http:
        for path in ("/", f"/c/{uuid.uuid4()}", f"/b/{uuid.uuid4()}"):
            response = http.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == "text/html; charset=utf-8"
            policy = response.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy
            assert "frame-ancestors 'none'" in policy
            assert response.headers["x-content-type-options"] == "nosniff"
            assert '<script type="module" src="/viewer/js/app.js">' in response.text
        assert not re.search(r"<script(?![^>]*\bsrc=)", http.get("/").text)  # nothing inline
        module = http.get("/viewer/js/app.js")
        assert module.headers["content-type"] == "text/javascript; charset=utf-8"
        assert module.headers["cache-control"] == "no-cache"
        again = http.get("/viewer/js/app.js", headers={"If-None-Match": module.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert http.get("/viewer/app.css").headers["content-type"] == "text/css; charset=utf-8"
        for bad in ("/viewer/%2e%2e/pyproject.toml", "/viewer/nothing.js", "/c/not-a-uuid"):
            assert http.get(bad).status_code in (404, 422), bad
        # The page's images need the key, like the rest of /v1.
        assert http.get(f"/v1/comparisons/{uuid.uuid4()}/previews/a").status_code == 401


def test_a_wrong_key_is_refused_and_another_tenants_address_is_not_found(
    browser: Any, stranger: Any, served: Served, artifacts: Path
) -> None:
    with served.api() as api:
        files = {
            "a": ("a.png", (SAMPLES / "reference.png").read_bytes()),
            "b": ("b.jpg", (SAMPLES / "candidate.jpg").read_bytes()),
        }
        mine = api.post("/v1/comparisons", files=files).json()
    stranger.goto(f"{served.base_url}/c/{mine['id']}")
    state = stranger.locator("[data-role=job-state]")
    playwright_api.expect(state).to_contain_text("(not_found)")
    stranger.screenshot(path=artifacts / "other-tenant.png")

    context = browser.new_context()
    tab = context.new_page()
    tab.goto(served.base_url + "/")
    tab.get_by_label("API key", exact=True).fill("dfa_not-a-real-key")
    tab.get_by_role("button", name="Sign in with this key").click()
    playwright_api.expect(tab.locator("#key-error")).to_contain_text("(unauthorized)")
    assert not [c for c in context.cookies() if c["name"] == "diffall_session"]
    assert tab.evaluate("sessionStorage.getItem('diffall.apiKey')") is None
    context.close()
