"""The interactive API docs render in a real browser with no network but the API itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.docs import ASSETS_URL
from tests.support.api import Api
from tests.support.browser import chromium, offline_page, serve_asgi


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


def test_swagger_ui_lists_the_operations_offline(sqlite_api: Api, artifacts: Path) -> None:
    with (
        serve_asgi(sqlite_api.app) as base,
        chromium() as browser,
        offline_page(browser, base) as offline,
    ):
        page = offline.page
        page.goto(f"{base}/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=20_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        page.screenshot(path=str(artifacts / "docs.png"), full_page=False)
        title = page.locator(".info .title").inner_text()
    assert "DiffALL" in title
    assert "/v1/comparisons" in paths and "/v1/batches" in paths
    assert offline.blocked == []  # nothing from a CDN (or anywhere else)
    assert offline.console_errors == []


def test_redoc_renders_offline(sqlite_api: Api, artifacts: Path) -> None:
    with (
        serve_asgi(sqlite_api.app) as base,
        chromium() as browser,
        offline_page(browser, base) as offline,
    ):
        page = offline.page
        page.goto(f"{base}/redoc")
        page.wait_for_selector("h1", timeout=20_000)
        page.get_by_text("/v1/comparisons/{comparison_id}").first.wait_for(timeout=20_000)
        heading = page.locator("h1").first.inner_text()
        page.screenshot(path=str(artifacts / "redoc.png"))
    assert "DiffALL" in heading
    assert offline.blocked == []  # its footer logo is on a CDN: the page's policy drops it


def test_docs_pages_point_only_at_bundled_assets(sqlite_api: Api) -> None:
    client = sqlite_api.client
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn." not in html and "https://" not in html.replace("https://github.com", "")
        assert ASSETS_URL in html
        policy = client.get(page).headers["content-security-policy"]
        assert "default-src 'self'" in policy and "img-src 'self' data:" in policy
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        response = client.get(f"{ASSETS_URL}/{asset}")
        assert response.status_code == 200 and len(response.content) > 10_000
