"""The web viewer in a real Chromium (Debian's, driven by Playwright) against a real
`diffall serve` on the embedded default (API, worker, broker): drop the bundled samples, wait
for the result, read the verdict and SSIM, switch every view, hover a changed pixel and read
its values, see a bad file's problem in its zone, draw an ignore rectangle, walk a batch, use
the keyboard only. The sign-in is tested in test_viewer_session.py.

Screenshots go to ``$DIFFALL_TEST_ARTIFACTS/viewer`` (default: the test session's temporary
directory; the path is printed).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from diffall.client import DiffallClient
from tests.support.images import edited_pair, garbled_png
from tests.support.processes import ROOT
from tests.support.stack import JOB_TIMEOUT_S
from tests.support.viewer import Served, comparison_id, screen_point

pytestmark = pytest.mark.slow

playwright_api = pytest.importorskip("playwright.sync_api")

SAMPLES = ROOT / "samples"
#: Milliseconds a page may take to show a result (upload, queue, compare, images).
RESULT_TIMEOUT_MS = int(JOB_TIMEOUT_S * 1000)
VERDICT_WORDS = {
    "identical": "Identical",
    "localized_edit": "Localised edit",
    "global_change": "Global change",
    "misaligned": "Misaligned",
    "different": "Different image",
}
VIEW_KEYS = {
    "1": "heatmap",
    "2": "side",
    "3": "swipe",
    "4": "onion",
    "5": "blink",
    "6": "changes",
}


def test_compare_the_samples_and_inspect_every_view(
    page: Any, served: Served, artifacts: Path
) -> None:
    page.get_by_label("Image A", exact=True).set_input_files(SAMPLES / "reference.png")
    page.get_by_label("Image B", exact=True).set_input_files(SAMPLES / "candidate.jpg")
    zone_a = page.locator(".zone[data-side=a] [data-role=info]")
    with Image.open(SAMPLES / "reference.png") as image:
        reference = np.asarray(image.convert("RGB"))
    height, width = reference.shape[:2]
    playwright_api.expect(zone_a).to_contain_text(f"{width} × {height} px")
    page.screenshot(path=artifacts / "compare.png")
    page.get_by_role("button", name="Compare").click()
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}$"))
    page.wait_for_selector("[data-role=verdict]", timeout=RESULT_TIMEOUT_MS)
    page.wait_for_selector("canvas.stage-canvas[data-scale]", timeout=RESULT_TIMEOUT_MS)
    page.wait_for_selector("section.stage[data-images=final]", timeout=RESULT_TIMEOUT_MS)
    playwright_api.expect(page.locator("[data-role=images-note]")).to_contain_text(
        "warped into A's frame"
    )

    with served.api() as api:
        comparison = api.get(f"/v1/comparisons/{comparison_id(page)}").json()
        result = comparison["result"]
        heatmap = Image.open(io.BytesIO(api.get(comparison["links"]["heatmap"]).content))
        preview_b = api.get(f"/v1/comparisons/{comparison['id']}/previews/b")
    assert comparison["state"] == "succeeded"
    assert result["alignment"]["applied"], result["alignment"]  # the samples need aligning
    assert Image.open(io.BytesIO(preview_b.content)).size == (width, height)

    playwright_api.expect(page.locator("[data-role=verdict]")).to_have_text(
        VERDICT_WORDS[result["verdict"]]
    )
    playwright_api.expect(page.locator("[data-role=summary]")).to_have_text(result["summary"])
    ssim_text = f"{result['ssim'] * 100:.1f} %"
    ssim = page.locator("[data-role=ssim]")
    playwright_api.expect(ssim).to_have_text(f"SSIM {ssim_text}")
    assert ssim.get_attribute("aria-label") == f"SSIM {ssim_text}"
    playwright_api.expect(page.locator("[data-role=psnr]")).to_have_text(f"{result['psnr']:.2f} dB")
    playwright_api.expect(page.locator("[data-role=inliers]")).to_contain_text(
        str(result["alignment"]["inliers"])
    )
    regions = page.locator("[data-role=regions] button")
    playwright_api.expect(regions).to_have_count(len(result["regions"]))
    # Every finding is a sentence (no raw JSON) that stays inside the side column.
    findings = page.locator("section.findings li")
    playwright_api.expect(findings).to_have_count(len(result["findings"]))
    assert [findings.nth(i).get_attribute("data-kind") for i in range(findings.count())] == [
        finding["kind"] for finding in result["findings"]
    ]
    side = page.locator("aside.side").bounding_box()
    for i in range(findings.count()):
        text, box = findings.nth(i).inner_text(), findings.nth(i).bounding_box()
        assert "{" not in text and '"' not in text, text
        assert box["x"] + box["width"] <= side["x"] + side["width"] + 0.5, (text, box, side)
    page.screenshot(path=artifacts / "result.png", full_page=True)

    stage = page.locator("section.stage")
    for key, view in VIEW_KEYS.items():
        page.locator("canvas.stage-canvas").focus()
        page.keyboard.press(key)
        playwright_api.expect(stage).to_have_attribute("data-view", view)
        playwright_api.expect(page.locator(f".view-tab[data-view={view}]")).to_have_attribute(
            "aria-pressed", "true"
        )
        page.wait_for_timeout(300)  # a frame or two
        page.screenshot(path=artifacts / f"view-{key}-{view}.png")

    # Hover the most changed pixel of the largest region: the readout gives A's pixel, B's
    # (in A's frame), the difference level and its band, and the region.
    page.keyboard.press("1")
    first = result["regions"][0]
    # Palette indices: the difference level up to 253, 254 = anti-aliased, 255 = not compared.
    levels = np.asarray(heatmap)
    window = levels[
        first["y"] : first["y"] + first["height"], first["x"] : first["x"] + first["width"]
    ].astype(int)
    window[window >= 254] = -1
    dy, dx = np.unravel_index(int(np.argmax(window)), window.shape)
    x, y = first["x"] + int(dx), first["y"] + int(dy)
    level = int(levels[y, x])
    assert level >= 77  # a content change: red
    page.mouse.move(*screen_point(page, x, y))
    readout = page.locator("[data-role=readout]")
    assert readout.get_attribute("role") == "status"
    playwright_api.expect(readout).to_contain_text(f"x {x}, y {y}")
    a_value = " ".join(str(v) for v in reference[y, x])
    playwright_api.expect(readout).to_contain_text(f"A {a_value}")
    b_pixel = np.asarray(Image.open(io.BytesIO(preview_b.content)).convert("RGBA"))[y, x]
    playwright_api.expect(readout).to_contain_text(f"B {' '.join(str(v) for v in b_pixel[:3])}")
    playwright_api.expect(readout).to_contain_text(
        f"difference {level} of 255 ({level / 255 * 100:.1f} %), above the tolerance"
    )
    playwright_api.expect(readout).to_contain_text("band red: content change")
    playwright_api.expect(readout).to_contain_text("region 1 (")
    page.screenshot(path=artifacts / "hover.png")

    # Side by side: the same pixel under the pointer in the right pane reads the same place.
    page.keyboard.press("2")
    page.wait_for_timeout(200)
    page.mouse.move(*screen_point(page, x, y, pane=1))
    playwright_api.expect(readout).to_contain_text(f"x {x}, y {y}")

    # A region in the list zooms onto it.
    page.keyboard.press("6")
    before = float(page.locator("canvas.stage-canvas").get_attribute("data-scale"))
    regions.nth(0).click()
    page.wait_for_timeout(300)
    after = float(page.locator("canvas.stage-canvas").get_attribute("data-scale"))
    assert after > before * 1.5, (before, after)
    page.screenshot(path=artifacts / "region-zoom.png")

    # The wheel zooms in around the pointer, so the pixel under it stays put.
    page.mouse.move(*screen_point(page, x, y))
    page.mouse.wheel(0, -400)
    page.wait_for_timeout(300)
    assert float(page.locator("canvas.stage-canvas").get_attribute("data-scale")) > after
    page.mouse.move(*screen_point(page, x, y))
    playwright_api.expect(readout).to_contain_text(f"x {x}, y {y}")


def test_a_bad_file_shows_its_problem_in_its_zone(
    page: Any, served: Served, artifacts: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not an image at all\n" * 4)
    with served.api() as api:
        problem = api.post("/v1/images", files={"file": ("notes.png", bad.read_bytes())}).json()
    page.get_by_label("Image A", exact=True).set_input_files(bad)
    page.get_by_label("Image B", exact=True).set_input_files(SAMPLES / "candidate.jpg")
    page.get_by_role("button", name="Compare").click()
    error = page.locator(".zone[data-side=a] [data-role=error]")
    playwright_api.expect(error).to_have_text(f"{problem['detail']} ({problem['code']})")
    playwright_api.expect(page.locator(".zone[data-side=b] [data-role=error]")).to_have_text("")
    assert page.url.endswith("/")  # no comparison was made
    page.screenshot(path=artifacts / "bad-file.png")


def test_the_batch_page_lists_every_pair_and_opens_one(
    page: Any, served: Served, artifacts: Path
) -> None:
    a, b = edited_pair(160, 120, seed=3)
    broken = garbled_png(a)
    with DiffallClient(served.base_url, served.key, timeout=20) as client:
        batch = client.create_batch(
            [
                (SAMPLES / "reference.png", SAMPLES / "candidate.jpg"),
                (a, b),
                (a, a),
                (a, broken),
            ]
        )
    page.goto(f"{served.base_url}/b/{batch['id']}")
    counts = page.locator("[data-role=batch-counts]")
    playwright_api.expect(counts).to_contain_text("100 % done", timeout=RESULT_TIMEOUT_MS)
    rows = page.locator("[data-role=pairs] tbody tr")
    playwright_api.expect(rows).to_have_count(4)
    # Worst first: the failure, then the lowest SSIM; the identical pair last.
    playwright_api.expect(rows.nth(0)).to_contain_text("corrupt_image")
    playwright_api.expect(rows.nth(3)).to_contain_text("Identical")
    playwright_api.expect(rows.nth(3)).to_contain_text("100.0 %")
    page.screenshot(path=artifacts / "batch.png", full_page=True)
    ids = [rows.nth(i).get_attribute("data-id") for i in range(4)]
    page.get_by_label("Filter by verdict").select_option("identical")
    playwright_api.expect(rows).to_have_count(1)
    playwright_api.expect(rows.nth(0)).to_have_attribute("data-id", ids[3])
    page.get_by_label("Filter by verdict").select_option("")
    playwright_api.expect(rows).to_have_count(4)

    rows.nth(1).click()
    page.wait_for_url(f"**/c/{ids[1]}")
    page.wait_for_selector("[data-role=verdict]", timeout=RESULT_TIMEOUT_MS)
    nav = page.locator("[data-role=batch-nav]")
    playwright_api.expect(nav).to_contain_text("pair 2 of 4")
    page.keyboard.press("ArrowRight")  # the next pair, in the batch page's order
    page.wait_for_url(f"**/c/{ids[2]}")
    playwright_api.expect(nav).to_contain_text("pair 3 of 4")
    page.wait_for_selector("canvas.stage-canvas[data-scale]", timeout=RESULT_TIMEOUT_MS)
    page.screenshot(path=artifacts / "batch-pair.png")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(f"**/c/{ids[1]}")
    page.get_by_role("link", name="Back to the batch").click()
    page.wait_for_url(f"**/b/{batch['id']}")


def test_previews_follow_the_comparison(served: Served) -> None:
    with DiffallClient(served.base_url, served.key, timeout=20) as client, served.api() as api:
        job = client.compare(SAMPLES / "reference.png", SAMPLES / "candidate.jpg")
        early = api.get(f"/v1/comparisons/{job['id']}/previews/a")
        done = client.wait(job["id"], timeout_s=JOB_TIMEOUT_S, poll_s=0.2)
        assert done["state"] == "succeeded"
        if early.status_code != 200:  # asked before the worker finished
            assert early.json()["code"] == "preview_not_available"
        base = f"/v1/comparisons/{job['id']}/previews"
        a = api.get(f"{base}/a")
        b = api.get(f"{base}/b")
        heat = api.get(f"{base}/heatmap")
        assert {r.headers["content-type"] for r in (a, b, heat)} == {"image/png"}
        assert heat.content == client.heatmap(job["id"])
        with Image.open(SAMPLES / "reference.png") as image:
            reference = np.asarray(image.convert("RGB"))
        assert np.array_equal(
            np.asarray(Image.open(io.BytesIO(a.content)).convert("RGB")), reference
        )
        warped = np.asarray(Image.open(io.BytesIO(b.content)))
        assert warped.shape == (*reference.shape[:2], 4)
        overlap = (warped[..., 3] == 255).mean()
        # B covers about the share of A the alignment reports (the rest is transparent).
        assert overlap == pytest.approx(done["result"]["alignment"]["overlap_ratio"], abs=0.03)
        assert api.get(f"/v1/comparisons/{job['id']}/previews/c").status_code == 422
        stored = served.data_dir / "storage" / "previews" / job["id"]
        assert sorted(p.name for p in stored.iterdir()) == ["a.png", "b.png"]
        api.delete(f"/v1/comparisons/{job['id']}").raise_for_status()
        assert not list(stored.glob("*.png"))  # deleted with the result
        gone = api.get(f"{base}/b")
        assert (gone.status_code, gone.json()["code"]) == (404, "preview_not_available")


def _canvas_pixel(page: Any, x: float, y: float) -> list[int]:
    """The stage canvas's RGB at a screen point (device pixel ratio 1)."""
    box = page.locator("canvas.stage-canvas").bounding_box()
    pixel: list[int] = page.evaluate(
        """([x, y]) => Array.from(document.querySelector("canvas.stage-canvas")
               .getContext("2d").getImageData(x, y, 1, 1).data.slice(0, 3))""",
        [int(x - box["x"]), int(y - box["y"])],
    )
    return pixel


def test_draw_an_ignore_rectangle_and_rerun(page: Any, served: Served, artifacts: Path) -> None:
    with DiffallClient(served.base_url, served.key, timeout=20) as client:
        job = client.compare(SAMPLES / "reference.png", SAMPLES / "candidate.jpg")
        before = client.wait(job["id"], timeout_s=JOB_TIMEOUT_S, poll_s=0.2)
    region = before["result"]["regions"][0]  # the localised edit
    x, y, w, h = region["x"], region["y"], region["width"], region["height"]
    page.goto(f"{served.base_url}/c/{job['id']}")
    page.wait_for_selector("section.stage[data-images=final]", timeout=RESULT_TIMEOUT_MS)
    page.get_by_role("button", name="Draw ignore area").click()
    page.mouse.move(*screen_point(page, x, y))
    page.mouse.down()
    page.mouse.move(*screen_point(page, x + w // 2, y + h // 2), steps=4)
    page.mouse.move(*screen_point(page, x + w - 1, y + h - 1), steps=4)
    page.mouse.up()
    items = page.locator("[data-role=ignore-list] li")
    playwright_api.expect(items).to_have_count(1)
    playwright_api.expect(items.nth(0)).to_contain_text(f"x {x}, y {y}, {w} × {h} px")
    # Drawn grey over the image (side by side: over A's own pixels, in both panes).
    page.keyboard.press("2")
    page.locator("[data-role=regions] button").nth(0).click()  # zoomed in: no smoothing
    page.wait_for_timeout(300)
    assert float(page.locator("canvas.stage-canvas").get_attribute("data-scale")) > 1
    with Image.open(SAMPLES / "reference.png") as image:
        reference = np.asarray(image.convert("RGB")).astype(float)
    cx, cy = x + w // 2, y + h // 2
    shown = np.array(_canvas_pixel(page, *screen_point(page, cx, cy)), dtype=float)
    expected = 0.85 * 128 + 0.15 * reference[cy, cx]
    assert np.abs(shown - expected).max() <= 4, (shown, expected)
    page.screenshot(path=artifacts / "ignore-drawn.png")

    page.get_by_role("button", name="Re-run with these areas ignored").click()
    page.wait_for_url(lambda url: re.search(r"/c/[0-9a-f-]{36}$", url) and job["id"] not in url)
    page.wait_for_selector("[data-role=verdict]", timeout=RESULT_TIMEOUT_MS)
    page.wait_for_selector("section.stage[data-images=final]", timeout=RESULT_TIMEOUT_MS)
    again_id = comparison_id(page)
    with served.api() as api:
        again = api.get(f"/v1/comparisons/{again_id}").json()
        heatmap = np.asarray(Image.open(io.BytesIO(api.get(again["links"]["heatmap"]).content)))
    assert (again["a"], again["b"]) == (before["a"], before["b"])
    assert again["options"]["ignore"] == [[x, y, w, h]]
    assert again["result"]["changed_pixels"] < before["result"]["changed_pixels"]
    assert (heatmap[y : y + h, x : x + w] == 255).all()  # not compared
    playwright_api.expect(page.locator("[data-role=ssim]")).to_have_text(
        f"SSIM {again['result']['ssim'] * 100:.1f} %"
    )
    # The new result lists and draws the ignored area; hovering it says so.
    playwright_api.expect(page.locator("[data-role=ignore-list] li")).to_have_count(1)
    page.mouse.move(*screen_point(page, cx, cy))
    playwright_api.expect(page.locator("[data-role=readout]")).to_contain_text(
        "difference: not compared"
    )
    page.screenshot(path=artifacts / "ignore-rerun.png", full_page=True)


def test_walk_a_20_pair_batch_with_the_arrow_keys(
    page: Any, served: Served, artifacts: Path
) -> None:
    pairs = [edited_pair(160, 120, seed=40 + i) for i in range(20)]
    with DiffallClient(served.base_url, served.key, timeout=20) as client:
        batch = client.create_batch(pairs)
    page.goto(f"{served.base_url}/b/{batch['id']}")
    counts = page.locator("[data-role=batch-counts]")
    playwright_api.expect(counts).to_contain_text("100 % done", timeout=RESULT_TIMEOUT_MS)
    rows = page.locator("[data-role=pairs] tbody tr")
    playwright_api.expect(rows).to_have_count(20)
    # Every row has its heatmap as a thumbnail (downscaled in the browser, long side 72 px).
    thumbs = page.locator("[data-role=pairs] canvas[data-role=thumb]")
    playwright_api.expect(thumbs).to_have_count(20)
    assert max(int(thumbs.nth(0).get_attribute(n) or 0) for n in ("width", "height")) == 72
    page.screenshot(path=artifacts / "batch-20.png", full_page=True)
    ids = [rows.nth(i).get_attribute("data-id") for i in range(20)]
    with served.api() as api:
        listed = api.get(f"/v1/batches/{batch['id']}/comparisons", params={"limit": 100}).json()
    ssims = {c["id"]: c["result"]["ssim"] for c in listed["items"]}
    assert [ssims[i] for i in ids] == sorted(ssims.values())  # worst first

    rows.nth(0).click()
    nav = page.locator("[data-role=batch-nav]")
    for index, listed_id in enumerate(ids):
        page.wait_for_url(f"**/c/{listed_id}")
        playwright_api.expect(nav).to_contain_text(f"pair {index + 1} of 20")
        playwright_api.expect(page.locator("[data-role=ssim]")).to_have_text(
            f"SSIM {ssims[listed_id] * 100:.1f} %"
        )
        page.keyboard.press("ArrowRight")
    page.wait_for_timeout(500)
    assert page.url.endswith(f"/c/{ids[-1]}")  # the last pair has no next one
    page.screenshot(path=artifacts / "batch-20-last.png")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(f"**/c/{ids[-2]}")

    # The compare page lists the batch among the recent ones.
    page.get_by_role("link", name="Compare", exact=True).click()
    recent = page.locator("[data-role=recent-batches]")
    playwright_api.expect(recent.locator(f"a[href='/b/{batch['id']}']")).to_have_text(
        "Batch of 20 pairs"
    )
    page.screenshot(path=artifacts / "compare-recent.png", full_page=True)


#: For every visible text element: its computed colour against the background it sits on
#: (semi-transparent backgrounds blended up the tree), and the WCAG 2 contrast ratio.
CONTRAST_SCRIPT = """() => {
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number).concat([1]).slice(0, 4);
  const blend = (top, bottom) =>
    [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const background = (el) => {
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let colour = [255, 255, 255, 1];
    for (const layer of layers.reverse()) colour = blend(layer, colour);
    return colour;
  };
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.checkVisibility() || el.closest("[disabled], noscript")) continue;
    if (el.closest("dialog") && !el.closest("dialog[open]")) continue;
    const style = getComputedStyle(el);
    const bg = background(el);
    const fg = blend(parse(style.color), bg);
    const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    out.push({ text: el.textContent.trim().slice(0, 40), ratio, need: large ? 3 : 4.5 });
  }
  return out;
}"""


def _low_contrast(page: Any) -> list[dict[str, Any]]:
    checked: list[dict[str, Any]] = page.evaluate(CONTRAST_SCRIPT)
    assert len(checked) > 10  # the page's text was found
    return [item for item in checked if item["ratio"] < item["need"]]


def test_keyboard_only_compare_and_aa_contrast(page: Any, served: Served, artifacts: Path) -> None:
    assert _low_contrast(page) == []  # the compare page (with its recent lists)
    page.get_by_label("Image A", exact=True).set_input_files(SAMPLES / "reference.png")
    page.get_by_label("Image B", exact=True).set_input_files(SAMPLES / "candidate.jpg")
    compare = page.get_by_role("button", name="Compare")
    playwright_api.expect(compare).to_be_enabled()
    focused = "(e => e.tagName + ':' + e.textContent)(document.activeElement)"
    for _ in range(40):  # Tab through the page until the button has the focus
        if page.evaluate(focused) == "BUTTON:Compare":
            break
        page.keyboard.press("Tab")
    assert page.evaluate(focused) == "BUTTON:Compare"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}$"))
    page.wait_for_selector("section.stage[data-images=final]", timeout=RESULT_TIMEOUT_MS)
    # A region, by keyboard: Tab to its button, Enter zooms onto it.
    first_region = page.locator("[data-role=regions] button").nth(0)
    before = float(page.locator("canvas.stage-canvas").get_attribute("data-scale"))
    first_region.focus()
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    assert float(page.locator("canvas.stage-canvas").get_attribute("data-scale")) > before
    # The legend is also text; every text on the result page meets WCAG AA.
    legend = page.locator(".legend-text")
    playwright_api.expect(legend).to_contain_text("red above 30 %")
    playwright_api.expect(legend).to_contain_text("grey: not compared")
    assert _low_contrast(page) == []
    page.screenshot(path=artifacts / "keyboard-result.png")
