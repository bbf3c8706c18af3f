"""Fixtures of the viewer's page tests: one `diffall serve` for the package, one Chromium
per module (Playwright's sync API runs one at a time; test_viewer_big.py starts its own of both)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import run_cli, service_env
from tests.support.viewer import (
    Served,
    headless_chromium,
    screenshot_folder,
    served_viewer,
    signed_in_page,
)


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`diffall serve` with no configuration, on a free port; its printed URL and key."""
    root = tmp_path_factory.mktemp("viewer-serve")
    env = service_env({"DIFFALL_DATA_DIR": str(root / "data")})
    code, out, err = run_cli("keys", "create", "--tenant", "other", env=env, cwd=root)
    assert code == 0, err
    with served_viewer(env, root=root, workers=2) as serve:
        assert serve.signin_url, serve.banner
        yield Served(**vars(serve), other_key=out.strip())


@pytest.fixture(scope="package")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go (printed, to be looked at)."""
    return screenshot_folder(tmp_path_factory, "viewer")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless."""
    with headless_chromium() as instance:
        yield instance


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    """A fresh page, signed in with the printed key; fails the test on any script error."""
    yield from signed_in_page(browser, served, served.key)


@pytest.fixture
def stranger(browser: Any, served: Served) -> Iterator[Any]:
    """A fresh page signed in with another tenant's key."""
    yield from signed_in_page(browser, served, served.other_key)
