"""The web viewer on a big pair (6000 x 8000, 48 MP, one 6 x 6 px edit) in a real Chromium
against a real `diffall serve` on the embedded default: the page shows the downscaled previews
(never the full-resolution PNGs), the wheel zooms into the edit and loads full-resolution tiles,
and hovering the edited pixel reads A's and B's exact values, at the fitted view and zoomed in.

Screenshots go to ``$DIFFALL_TEST_ARTIFACTS/viewer-big`` (default: a temporary directory; the
path is printed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffall.client import DiffallClient
from tests.support.images import png
from tests.support.processes import service_env
from tests.support.viewer import (
    ServedViewer,
    headless_chromium,
    screenshot_folder,
    served_viewer,
)

pytestmark = pytest.mark.slow

playwright_api = pytest.importorskip("playwright.sync_api")

WIDTH, HEIGHT = 6000, 8000
EDIT = (4321, 5678, 6)  # x, y, side of the repainted square
PROBE = (4323, 5680)  # a pixel inside it
#: Milliseconds for a big comparison and its first previews on a busy shared machine.
BIG_TIMEOUT_MS = 600_000
UI_TIMEOUT_MS = 60_000


def big_pair() -> tuple[np.ndarray, np.ndarray]:
    """A page-like 6000 x 8000 image (gradients, a grid, dark text-like bars) and a copy with
    one 6 x 6 square repainted in its complementary colour."""
    rng = np.random.default_rng(12)
    a = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    a[..., 0] = (np.arange(HEIGHT, dtype=np.uint32) * 200 // HEIGHT + 30).astype(np.uint8)[:, None]
    a[..., 1] = (np.arange(WIDTH, dtype=np.uint32) * 200 // WIDTH + 30).astype(np.uint8)[None, :]
    grid = (np.arange(HEIGHT)[:, None] // 200 + np.arange(WIDTH)[None, :] // 200) % 2
    a[..., 2] = (grid * 90 + 80).astype(np.uint8)
    for _ in range(3000):
        x, y = int(rng.integers(0, WIDTH - 300)), int(rng.integers(0, HEIGHT - 20))
        a[y : y + 12, x : x + int(rng.integers(40, 300))] = rng.integers(0, 60, 3, dtype=np.uint8)
    b = a.copy()
    x, y, side = EDIT
    b[y : y + side, x : x + side] = 255 - b[y : y + side, x : x + side]
    return a, b


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedViewer]:
    """`diffall serve` with no configuration (a longer time limit for a 48 MP comparison)."""
    root = tmp_path_factory.mktemp("viewer-big-serve")
    env = service_env(
        {
            "DIFFALL_DATA_DIR": str(root / "data"),
            "DIFFALL_WORKER__SOFT_TIME_LIMIT_S": "540",
            "DIFFALL_WORKER__HARD_TIME_LIMIT_S": "600",
        }
    )
    with served_viewer(env, root=root, workers=1) as serve:
        yield serve


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_folder(tmp_path_factory, "viewer-big")


@pytest.fixture(scope="module")
def big(served: ServedViewer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any, Any]:
    """The big pair, compared (pixel mode) through the SDK: (comparison id, A, B)."""
    a, b = big_pair()
    with DiffallClient(served.base_url, served.key, timeout=120) as client:
        job = client.compare(png(a), png(b), options={"mode": "pixel"})
        done = client.wait(job["id"], timeout_s=BIG_TIMEOUT_MS / 1000, poll_s=1.0)
    assert done["state"] == "succeeded", done
    assert done["result"]["verdict"] == "localized_edit", done["result"]
    return str(job["id"]), a, b


@pytest.fixture
def page(served: ServedViewer) -> Iterator[Any]:
    with headless_chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(UI_TIMEOUT_MS)
        playwright_api.expect.set_options(timeout=UI_TIMEOUT_MS)
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.goto(served.base_url + "/")
        tab.get_by_label("API key", exact=True).fill(served.key)
        tab.get_by_role("button", name="Sign in with this key").click()
        tab.wait_for_selector("#key-dialog:not([open])", state="attached")
        yield tab
        assert not errors, errors


def _transform(page: Any) -> tuple[dict[str, float], float, float, float]:
    canvas = page.locator("canvas.stage-canvas")
    box = canvas.bounding_box()
    scale = float(canvas.get_attribute("data-scale"))
    return (
        box,
        scale,
        float(canvas.get_attribute("data-tx")),
        float(canvas.get_attribute("data-ty")),
    )


def _screen_point(page: Any, x: float, y: float) -> tuple[float, float]:
    box, scale, tx, ty = _transform(page)
    return box["x"] + tx + (x + 0.5) * scale, box["y"] + ty + (y + 0.5) * scale


def _canvas_pixels(page: Any, x: int, y: int, *, radius: int) -> list[list[int]]:
    """RGBA of the stage canvas's device pixels within ``radius`` of A's pixel (x, y)."""
    _, scale, tx, ty = _transform(page)
    return list(
        page.evaluate(
            """([cx, cy, r]) => {
                const c = document.querySelector('canvas.stage-canvas');
                const d = window.devicePixelRatio || 1;
                const x = Math.round(cx * d) - r, y = Math.round(cy * d) - r;
                const data = c.getContext('2d').getImageData(x, y, 2 * r + 1, 2 * r + 1).data;
                const out = [];
                for (let i = 0; i < data.length; i += 4) out.push(Array.from(data.slice(i, i + 4)));
                return out;
            }""",
            [tx + (x + 0.5) * scale, ty + (y + 0.5) * scale, radius],
        )
    )


def _expected_readout(a: np.ndarray, b: np.ndarray) -> re.Pattern[str]:
    x, y = PROBE
    pa, pb = a[y, x].tolist(), b[y, x].tolist()
    level = max(abs(p - q) for p, q in zip(pa, pb, strict=True))
    return re.compile(
        rf"^x {x}, y {y} · A {pa[0]} {pa[1]} {pa[2]} · B {pb[0]} {pb[1]} {pb[2]} · "
        rf"difference {level} of 255 .* · band red: content change · region 1 "
    )


def _assert_exact(text: str, a: np.ndarray, b: np.ndarray) -> None:
    """The readout's x, y and the A and B values it shows are A's and B's pixels there."""
    found = re.match(r"^x (\d+), y (\d+) · A (\d+) (\d+) (\d+) · B (\d+) (\d+) (\d+) ·", text)
    assert found, text
    x, y, *values = (int(v) for v in found.groups())
    assert abs(x - PROBE[0]) < 40 and abs(y - PROBE[1]) < 40, text
    assert values == a[y, x].tolist() + b[y, x].tolist(), text


def test_a_big_pair_shows_previews_zooms_into_tiles_and_reads_exact_pixels(
    page: Any, served: ServedViewer, big: tuple[str, Any, Any], artifacts: Path
) -> None:
    comparison_id, a, b = big
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url.removeprefix(served.base_url)))
    page.goto(f"{served.base_url}/c/{comparison_id}")
    # The first view renders the previews on the server (seconds for 48 MP).
    page.wait_for_selector("section.stage[data-tiled=true]", timeout=BIG_TIMEOUT_MS)
    page.wait_for_function("document.querySelector('canvas.stage-canvas').dataset.level === '2'")
    previews = [r for r in requests if "/previews/" in r and "/tiles/" not in r]
    assert sorted(previews) == sorted(
        f"/v1/comparisons/{comparison_id}/previews/{name}?level=2" for name in ("a", "b", "heatmap")
    ), previews  # 1500 x 2000 previews, never the 48 MP PNGs
    note = page.locator("[data-role=images-note]")
    playwright_api.expect(note).to_contain_text("shown from 1500 × 2000 previews")
    page.screenshot(path=artifacts / "big-fitted-heatmap.png", full_page=True)
    # At the fitted view (about 12 A pixels per screen pixel) the 6 px edit is still red on
    # screen: the heatmap is drawn max-pooled to the screen's resolution, not averaged.
    reds = [p for p in _canvas_pixels(page, *PROBE, radius=3) if p[0] > 150 and p[1] < 120]
    assert reds, _canvas_pixels(page, *PROBE, radius=3)
    assert not [p for p in _canvas_pixels(page, 1000, 1000, radius=3) if p[0] > 150 and p[1] < 120]

    # Hover the edited pixel at the fitted view (12 % zoom): the readout is still exact, read
    # from the full-resolution tiles under the pointer.
    expected = _expected_readout(a, b)
    readout = page.locator("[data-role=readout]")
    page.mouse.move(*_screen_point(page, *PROBE))
    playwright_api.expect(readout).to_have_attribute("data-exact", "true", timeout=BIG_TIMEOUT_MS)
    _assert_exact(readout.text_content() or "", a, b)  # a screen pixel spans ~14 of A's here

    # Wheel-zoom into the edit until full resolution and beyond: level-0 tiles arrive.
    for _ in range(40):
        _, scale, _, _ = _transform(page)
        if scale >= 4:
            break
        page.mouse.move(*_screen_point(page, *PROBE))
        page.mouse.wheel(0, -400)
        page.wait_for_timeout(60)
    canvas = page.locator("canvas.stage-canvas")
    playwright_api.expect(canvas).to_have_attribute("data-level", "0")
    page.wait_for_function(  # the first tile waits for the server's tile rendering
        "document.querySelector('canvas.stage-canvas').dataset.tileLevels.split(',').includes('0')",
        timeout=BIG_TIMEOUT_MS,
    )
    tiles = [r for r in requests if "/tiles/0/" in r]
    assert tiles and all(r.startswith(f"/v1/comparisons/{comparison_id}/previews/") for r in tiles)
    # Zooming went through the intermediate level too (1: 3000 x 4000), not straight to 0.
    playwright_api.expect(canvas).to_have_attribute("data-tile-levels", re.compile(r"0,1"))
    page.mouse.move(*_screen_point(page, *PROBE))
    playwright_api.expect(readout).to_have_text(expected)
    playwright_api.expect(readout).to_have_attribute("data-exact", "true")
    page.wait_for_timeout(500)  # the last tiles drawn
    page.screenshot(path=artifacts / "big-zoomed-edit-heatmap.png")
    # What is on screen at the probe is the heatmap's red over A (from the tiles).
    red = _canvas_pixels(page, *PROBE, radius=0)[0]
    assert red[0] > 150 and red[1] < 120 and red[2] < 120, red

    # Swipe at full resolution, all of it B: B's own pixels, from B's tiles.
    page.keyboard.press("3")
    page.get_by_label("Swipe position").fill("0")
    page.mouse.move(*_screen_point(page, *PROBE))
    playwright_api.expect(readout).to_have_text(expected)
    page.wait_for_timeout(800)
    page.screenshot(path=artifacts / "big-zoomed-swipe-b.png")
    assert any("/previews/b/tiles/0/" in r for r in requests)
    assert not [r for r in requests if re.search(r"/previews/(a|b|heatmap)$", r)]
