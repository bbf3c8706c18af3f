"""Viewer benchmark: what a person waits for, in Debian's Chromium against a running server.

Run a server first (``./scripts/serve``, or ``.venv/bin/diffall serve --port 8000``), then::

    .venv/bin/python -m bench.bench_viewer --base-url http://127.0.0.1:8000 \\
        --key-file diffall-data/local-api-key

Prints six tables:

- **transfer**: bytes of HTML, script and style the page loads before any image;
- **first result (1080p)**: from Compare (both files picked) to the first painted result
  (upload, queue, compare, heatmap, first canvas frame) and to the server's previews shown,
  against the reference: the same pair through the SDK (upload, submit, poll until
  ``succeeded``), measured in the same run, alternating; the ratio is the viewer's overhead;
- **previews**: ``render_previews`` (what the API does on a result's first view) against
  ``compare`` on the same pair, 1080p and 4K;
- **frames (4K)**: frame intervals while hovering and while panning a 4K result (Chromium's
  requestAnimationFrame timeline in the page), against the 16.7 ms budget of 60 Hz;
- **pyramid (37 MP)**: the big image previews and tiles (``core.imaging.pyramid``, what the API
  renders on a big result's first view) against ``compare`` on the same 7200 x 5120 pair;
- **big result (37 MP)**: from opening ``/c/{id}`` of a succeeded 7200 x 5120 comparison to its
  first painted result (the downscaled previews: rendered on this first view, then cached), the
  same on a second open, and the SDK's own upload-to-succeeded time as the reference; then the
  frame intervals of hover and pan zoomed in at full resolution (tiles), as for 4K.

Headless Chromium without a GPU draws in software: frame figures are an upper bound of a
desktop's. Every figure is a median (p95 beside frame figures).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.images import photographic_pair, png_bytes
from core.imaging import CompareOptions, compare
from core.imaging.previews import a_pixels, b_in_a_frame, render_previews
from core.imaging.pyramid import (
    PyramidLayout,
    heatmap_pyramid,
    pixel_pyramid,
    read_heatmap_indices,
)
from diffall.client import DiffallClient

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BUDGET_MS = 1000 / 60

#: Records each frame's timestamp; evaluated again, it only empties the list (one loop).
FRAME_RECORDER = """
window.__frames = [];
if (!window.__recording) {
  window.__recording = true;
  (function tick(t) { window.__frames.push(t); requestAnimationFrame(tick); })(performance.now());
}
"""


def _pair(width: int, height: int, folder: Path, seed: int) -> tuple[Path, Path]:
    a, b = photographic_pair(width, height, seed=seed)
    pa, pb = folder / f"a-{width}-{seed}.png", folder / f"b-{width}-{seed}.png"
    pa.write_bytes(png_bytes(a))
    pb.write_bytes(png_bytes(b))
    return pa, pb


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _context(browser: Any, key: str, base: str) -> Any:
    """A browser context signed in with the key (the page's sign-in dialog sets the cookie)."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.goto(base + "/")
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Sign in with this key").click()
    page.wait_for_selector("#key-dialog:not([open])", state="attached")
    page.close()
    return context


def _transfer(browser: Any, base: str, key: str) -> dict[str, int]:
    context = _context(browser, key, base)
    page = context.new_page()
    sizes: dict[str, int] = {}

    def record(response: Any) -> None:
        path = response.url.removeprefix(base)
        if path == "/" or path.startswith("/viewer/"):
            sizes[path] = len(response.body())

    page.on("response", record)
    page.goto(base + "/", wait_until="networkidle")
    context.close()
    return sizes


def _viewer_first_result(
    browser: Any, base: str, key: str, a: Path, b: Path
) -> tuple[float, float]:
    """Seconds from Compare to the first painted result, and to B warped in A's frame."""
    context = _context(browser, key, base)
    page = context.new_page()
    page.goto(base + "/")
    page.get_by_label("Image A", exact=True).set_input_files(a)
    page.get_by_label("Image B", exact=True).set_input_files(b)
    start = time.perf_counter()
    page.get_by_role("button", name="Compare").click()
    page.wait_for_selector("canvas.stage-canvas[data-scale]", timeout=180_000)  # first paint
    page.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    first = time.perf_counter() - start
    page.wait_for_selector("section.stage[data-images=final]", timeout=180_000)
    final = time.perf_counter() - start
    context.close()
    return first, final


def _sdk_result(base: str, key: str, a: Path, b: Path) -> tuple[float, str]:
    with DiffallClient(base, key, timeout=60) as client:
        start = time.perf_counter()
        job = client.compare(a, b)
        done = client.wait(job["id"], timeout_s=180, poll_s=0.1)
        assert done["state"] == "succeeded", done
        return time.perf_counter() - start, job["id"]


def _frames(
    browser: Any, base: str, key: str, comparison_id: str, *, wheel: int = 1200
) -> dict[str, list[float]]:
    context = _context(browser, key, base)
    page = context.new_page()
    page.goto(f"{base}/c/{comparison_id}")
    page.wait_for_selector("section.stage[data-images=final]", timeout=600_000)
    box = page.locator("canvas.stage-canvas").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    for _ in range(wheel // 400):
        page.mouse.wheel(0, -400)  # zoom in, past 1:1
        page.wait_for_timeout(100)
    page.wait_for_timeout(500)
    page.mouse.move(cx + 1, cy + 1)  # first hover reads the pixels: not a frame figure
    page.wait_for_function(  # and, on a big image, the visible tiles have arrived
        "!document.querySelector('[data-role=readout]').dataset.exact"
        " || document.querySelector('[data-role=readout]').dataset.exact === 'true'",
        timeout=600_000,
    )
    page.wait_for_timeout(3000)
    out: dict[str, list[float]] = {}
    for name, drag in (("hover", False), ("pan", True)):
        page.evaluate(FRAME_RECORDER)
        if drag:
            page.mouse.down()
        for step in range(120):
            page.mouse.move(cx - 200 + step * 3, cy - 100 + step)
        if drag:
            page.mouse.up()
        frames = page.evaluate("window.__frames")
        out[name] = [b - a for a, b in itertools.pairwise(frames)][1:]
    context.close()
    return out


def _previews_vs_compare(width: int, height: int, repeat: int) -> tuple[float, float]:
    a, b = photographic_pair(width, height, seed=7)
    da, db = png_bytes(a), png_bytes(b)
    engine, previews = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        result = compare(da, db, CompareOptions(preview_max_side=None))
        engine.append(time.perf_counter() - start)
        start = time.perf_counter()
        homography = result.alignment.homography if result.alignment.applied else None
        render_previews(da, db, homography)
        previews.append(time.perf_counter() - start)
    return _median(engine), _median(previews)


def _pyramid_vs_compare(width: int, height: int) -> tuple[float, float, float]:
    """Seconds of compare, of the previews alone, and of the previews plus every tile."""
    a, b = photographic_pair(width, height, seed=8)
    da, db = png_bytes(a), png_bytes(b)
    del a, b
    start = time.perf_counter()
    result = compare(da, db, CompareOptions(preview_max_side=None))
    engine = time.perf_counter() - start
    homography = result.alignment.homography if result.alignment.applied else None
    layout = PyramidLayout(width, height, max_side=2048)
    timings = []
    for tiles in (False, True):
        start = time.perf_counter()
        pixels = a_pixels(da)
        for piece in pixel_pyramid(pixels, layout, tiles=tiles):
            piece.png  # noqa: B018 - encoding is what is timed
        pixels = b_in_a_frame(db, homography, (height, width))
        for piece in pixel_pyramid(pixels, layout, tiles=tiles):
            piece.png  # noqa: B018
        del pixels
        indices = read_heatmap_indices(result.heatmap_png, max_pixels=10**9)
        for piece in heatmap_pyramid(indices, layout, tiles=tiles):
            piece.png  # noqa: B018
        timings.append(time.perf_counter() - start)
    return engine, timings[0], timings[1]


def _open_big(browser: Any, base: str, key: str, comparison_id: str) -> float:
    """Seconds from opening /c/{id} to the first painted result of a big comparison."""
    context = _context(browser, key, base)
    page = context.new_page()
    start = time.perf_counter()
    page.goto(f"{base}/c/{comparison_id}")
    page.wait_for_selector("section.stage[data-tiled=true]", timeout=600_000)
    page.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    elapsed = time.perf_counter() - start
    context.close()
    return elapsed


def _print_frames(title: str, frames: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    for name, values in frames.items():
        print(
            f"  {name:5s} median {_median(values):6.1f} ms  p95 {_p95(values):6.1f} ms"
            f"  ({len(values)} frames; ratio to 16.7 ms: {_median(values) / BUDGET_MS:.2f})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--key-file", type=Path, default=Path("diffall-data/local-api-key"))
    parser.add_argument("--repeat", type=int, default=3, help="runs per timed row")
    parser.add_argument("--skip-big", action="store_true", help="no 37 MP rows (minutes)")
    args = parser.parse_args(argv)
    base = args.base_url.rstrip("/")
    key = args.key_file.read_text().strip()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        folder = Path(tmp)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        sizes = _transfer(browser, base, key)
        print("transfer (before any image)")
        for path, size in sorted(sizes.items()):
            print(f"  {path:32s} {size / 1024:8.1f} kB")
        total = sum(sizes.values())
        print(f"  {'total':32s} {total / 1024:8.1f} kB   (target 300 kB: {total / 307200:.2f}x)")

        viewer, final, sdk = [], [], []
        for run in range(args.repeat):  # a new pair each run (content-addressed uploads)
            a, b = _pair(1920, 1080, folder, seed=100 + run)
            first, last = _viewer_first_result(browser, base, key, a, b)
            viewer.append(first)
            final.append(last)
            a, b = _pair(1920, 1080, folder, seed=200 + run)
            sdk.append(_sdk_result(base, key, a, b)[0])
        print("\nfirst result, 1080p pair (median of", args.repeat, "runs)")
        print(f"  viewer: open page -> first painted result  {_median(viewer):7.2f} s")
        print(f"  viewer: ... -> server previews shown       {_median(final):7.2f} s")
        print(f"  SDK:    upload -> succeeded (reference)     {_median(sdk):7.2f} s")
        print(
            f"  ratio viewer / SDK                          {_median(viewer) / _median(sdk):7.2f}"
        )

        print("\npreviews, rendered by the API on first view (median of", args.repeat, "runs)")
        for label, (w, h) in (("1080p", (1920, 1080)), ("4K", (3840, 2160))):
            engine, previews = _previews_vs_compare(w, h, args.repeat)
            print(
                f"  {label:5s} compare {engine * 1000:7.0f} ms  previews {previews * 1000:6.0f} ms"
                f"  ratio {previews / engine:.2f}"
            )

        a, b = _pair(3840, 2160, folder, seed=300)
        _, comparison_id = _sdk_result(base, key, a, b)
        _print_frames(
            "frames on a 4K result (software rendering)",
            _frames(browser, base, key, comparison_id),
        )

        if not args.skip_big:
            engine, previews_only, with_tiles = _pyramid_vs_compare(7200, 5120)
            print("\npyramid of a 37 MP pair (7200 x 5120), one run")
            print(f"  compare                      {engine:7.1f} s")
            print(
                f"  previews (3 x 1800 x 1280)   {previews_only:7.1f} s"
                f"  ratio {previews_only / engine:.2f}"
            )
            ratio = with_tiles / engine
            print(f"  previews + all tiles         {with_tiles:7.1f} s  ratio {ratio:.2f}")

            a, b = _pair(7200, 5120, folder, seed=400)
            sdk_big, big_id = _sdk_result(base, key, a, b)
            first_open = _open_big(browser, base, key, big_id)
            second_open = _open_big(browser, base, key, big_id)
            print("\nbig result, 37 MP pair (7200 x 5120), one run")
            print(f"  SDK: upload -> succeeded (reference)          {sdk_big:7.2f} s")
            print(
                f"  viewer: open /c/{{id}} -> first painted result  {first_open:7.2f} s"
                f"  (first view: previews rendered; ratio to SDK {first_open / sdk_big:.2f})"
            )
            print(f"  viewer: second open -> first painted result   {second_open:7.2f} s")
            _print_frames(
                "frames on a 37 MP result zoomed in past 1:1 (tiles; software rendering)",
                _frames(browser, base, key, big_id, wheel=4000),
            )
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
