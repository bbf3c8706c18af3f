"""The viewer's page tests: a real ``diffall serve`` on the embedded default with its banner
parsed, Debian's Chromium for them (:func:`tests.support.browser.chromium`), and the folder
their screenshots go to."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import (
    BANNER_END,
    KEY_LINE,
    SIGNIN_LINE,
    URL_LINE,
    Service,
    free_port,
    python_argv,
    start,
    wait_until,
)

__all__ = [
    "UI_TIMEOUT_MS",
    "Served",
    "ServedViewer",
    "comparison_id",
    "headless_chromium",
    "screen_point",
    "screenshot_folder",
    "served_viewer",
    "session_cookie",
    "signed_in_page",
]

#: Seconds ``diffall serve`` may take to print its banner (a busy shared machine starts five
#: processes slowly).
BANNER_TIMEOUT_S = 180
#: Milliseconds a page may take to react (generous: the test machine is shared and busy).
UI_TIMEOUT_MS = 30_000


@dataclass
class ServedViewer:
    """A running ``diffall serve``: its URL, the banner's key and sign-in link, its process."""

    base_url: str
    key: str
    signin_url: str | None  # the banner's one-time link, when it printed one
    service: Service
    data_dir: Path
    banner: str

    def api(self) -> httpx.Client:
        """An HTTP client for the API, authenticated with the banner's key."""
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=20
        )


@dataclass
class Served(ServedViewer):
    """The served viewer, with another tenant's key and the banner's one-time sign-in link."""

    other_key: str = ""  # another tenant's


@contextmanager
def served_viewer(env: dict[str, str], *, root: Path, workers: int) -> Iterator[ServedViewer]:
    """``diffall serve --workers=N`` on a free port with ``env`` (``DIFFALL_DATA_DIR`` set),
    from ``root`` (logs in ``root/logs``), until its banner is printed; stopped at the end."""
    serve = start(
        "serve",
        python_argv("-m", "diffall.cli", "serve", f"--port={free_port()}", f"--workers={workers}"),
        env=env,
        cwd=root,
        log_dir=root / "logs",
        capture_stdout=True,
    )
    try:
        wait_until(
            lambda: BANNER_END in "".join(serve.stdout_lines),
            timeout_s=BANNER_TIMEOUT_S,
            what="the start-up banner",
            services=[serve],
        )
        banner = "".join(serve.stdout_lines)
        key, url = KEY_LINE.search(banner), URL_LINE.search(banner)
        assert key and url, banner
        signin = SIGNIN_LINE.search(banner)
        yield ServedViewer(
            base_url=url.group(1),
            key=key.group(1),
            signin_url=signin.group(1) if signin else None,
            service=serve,
            data_dir=Path(env["DIFFALL_DATA_DIR"]),
            banner=banner,
        )
    finally:
        serve.stop()


def screenshot_folder(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """``$DIFFALL_TEST_ARTIFACTS/<name>``, else a temporary folder; made, and printed (so the
    screenshots can be looked at)."""
    base = os.environ.get("DIFFALL_TEST_ARTIFACTS")
    folder = Path(base) / name if base else tmp_path_factory.mktemp(f"{name}-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"viewer screenshots: {folder}")
    return folder


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """Debian's headless Chromium (:func:`tests.support.browser.chromium`); fails the test,
    saying how to install it, when it is missing."""
    from tests.support.browser import CHROMIUM, chromium  # Playwright only where a page is used

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)
    with chromium() as browser:
        yield browser


def signed_in_page(browser: Any, served: Served, key: str) -> Iterator[Any]:
    """A new page of ``browser`` signed in to ``served`` with ``key`` (yielded; closed after,
    failing the test on any script error)."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(served.base_url + "/")
    tab.get_by_label("API key", exact=True).fill(key)
    tab.get_by_role("button", name="Sign in with this key").click()
    tab.wait_for_selector("#key-dialog:not([open])", state="attached")
    expect(tab.locator("#signed-in")).to_have_text(re.compile("^Signed in as "))
    yield tab
    context.close()
    assert not errors, errors


def comparison_id(page: Any) -> str:
    """The comparison id in a result page's address (``/c/{id}``)."""
    match = re.search(r"/c/([0-9a-f-]{36})$", page.url)
    assert match, page.url
    return match.group(1)


def screen_point(page: Any, x: float, y: float, *, pane: int = 0) -> tuple[float, float]:
    """Where A's pixel (x, y) is on the screen, from the stage's current transform."""
    canvas = page.locator("canvas.stage-canvas")
    box = canvas.bounding_box()
    scale = float(canvas.get_attribute("data-scale"))
    tx = float(canvas.get_attribute("data-tx"))
    ty = float(canvas.get_attribute("data-ty"))
    offset = pane * box["width"] / 2
    return box["x"] + offset + tx + (x + 0.5) * scale, box["y"] + ty + (y + 0.5) * scale


def session_cookie(context: Any) -> dict[str, Any]:
    """The browser context's one ``diffall_session`` cookie."""
    cookies = [c for c in context.cookies() if c["name"] == "diffall_session"]
    assert len(cookies) == 1, cookies
    cookie: dict[str, Any] = cookies[0]
    return cookie
