"""A real browser for page tests: Debian's Chromium driven by Playwright, and an ASGI app served
on a free loopback port by uvicorn in a background thread.

No browser is downloaded: Playwright launches ``/usr/bin/chromium`` (``scripts/services.sh``
installs it with apt-get when missing). Pages are kept offline: :func:`offline_page` aborts every
request that does not go to the app under test and records it, so a test can assert that a page
needed nothing from a CDN.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from playwright.sync_api import Browser, Page, Playwright, Route, sync_playwright

__all__ = ["CHROMIUM", "OfflinePage", "chromium", "offline_page", "serve_asgi"]

#: Debian's Chromium (the only browser this project's tests use).
CHROMIUM = "/usr/bin/chromium"

#: Flags for a quiet headless Chromium on a closed network (no background connections).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_asgi(app: Any, *, timeout_s: float = 20.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) until the block ends.

    Yields the base URL, e.g. ``http://127.0.0.1:41234``; the app's lifespan runs as in
    production (resources opened at start, closed at the end).
    """
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Debian Chromium, driven by Playwright, closed at the end of the block."""
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@dataclass
class OfflinePage:
    """A page whose requests may only go to ``base_url``; others are aborted and listed."""

    page: Page
    base_url: str
    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@contextmanager
def offline_page(browser: Browser, base_url: str) -> Iterator[OfflinePage]:
    """A new page in a fresh context that can reach only ``base_url`` (and data:/blob: URLs)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    offline = OfflinePage(page=page, base_url=base_url)

    def guard(route: Route) -> None:
        url = route.request.url
        if url.startswith(base_url) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            offline.blocked.append(url)
            route.abort()

    page.route("**/*", guard)
    page.on(
        "console",
        lambda message: (
            offline.console_errors.append(message.text) if message.type == "error" else None
        ),
    )
    try:
        yield offline
    finally:
        context.close()
