"""The web viewer in a real Chromium (Debian's, driven by Playwright) against a real
`diffall serve` on the embedded default (API, worker, broker): drop the bundled samples, wait
for the result, read the verdict and SSIM, switch every view, hover a changed pixel and read
its values, see a bad file's problem in its zone, walk a batch.

Screenshots go to ``$DIFFALL_TEST_ARTIFACTS/viewer`` (default: the test session's temporary
directory; the path is printed).
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from diffall.client import DiffallClient
from tests.support.images import edited_pair, garbled_png
from tests.support.processes import ROOT, run_cli, service_env
from tests.support.stack import JOB_TIMEOUT_S
from tests.support.viewer import (
    ServedViewer,
    headless_chromium,
    screenshot_folder,
    served_viewer,
)

pytestmark = pytest.mark.slow

playwright_api = pytest.importorskip("playwright.sync_api")

SAMPLES = ROOT / "samples"
#: Milliseconds a page may take to show a result (upload, queue, compare, images).
RESULT_TIMEOUT_MS = int(JOB_TIMEOUT_S * 1000)
#: Milliseconds a page may take to react (generous: the test machine is shared and busy).
UI_TIMEOUT_MS = 30_000
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


@dataclass
class Served(ServedViewer):
    """The served viewer, with another tenant's key and the banner's one-time sign-in link."""

    other_key: str = ""  # another tenant's


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`diffall serve` with no configuration, on a free port; its printed URL and key."""
    root = tmp_path_factory.mktemp("viewer-serve")
    env = service_env({"DIFFALL_DATA_DIR": str(root / "data")})
    code, out, err = run_cli("keys", "create", "--tenant", "other", env=env, cwd=root)
    assert code == 0, err
    with served_viewer(env, root=root, workers=2) as serve:
        assert serve.signin_url, serve.banner
        yield Served(**vars(serve), other_key=out.strip())


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go (printed, to be looked at)."""
    return screenshot_folder(tmp_path_factory, "viewer")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless."""
    with headless_chromium() as instance:
        yield instance


def _signed_in(browser: Any, served: Served, key: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    playwright_api.expect.set_options(timeout=UI_TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(served.base_url + "/")
    tab.get_by_label("API key", exact=True).fill(key)
    tab.get_by_role("button", name="Sign in with this key").click()
    tab.wait_for_selector("#key-dialog:not([open])", state="attached")
    playwright_api.expect(tab.locator("#signed-in")).to_have_text(re.compile("^Signed in as "))
    yield tab
    context.close()
    assert not errors, errors


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    """A fresh page, signed in with the printed key; fails the test on any script error."""
    yield from _signed_in(browser, served, served.key)


@pytest.fixture
def stranger(browser: Any, served: Served) -> Iterator[Any]:
    """A fresh page signed in with another tenant's key."""
    yield from _signed_in(browser, served, served.other_key)


def _comparison_id(page: Any) -> str:
    match = re.search(r"/c/([0-9a-f-]{36})$", page.url)
    assert match, page.url
    return match.group(1)


def _screen_point(page: Any, x: float, y: float, *, pane: int = 0) -> tuple[float, float]:
    """Where A's pixel (x, y) is on the screen, from the stage's current transform."""
    canvas = page.locator("canvas.stage-canvas")
    box = canvas.bounding_box()
    scale = float(canvas.get_attribute("data-scale"))
    tx = float(canvas.get_attribute("data-tx"))
    ty = float(canvas.get_attribute("data-ty"))
    offset = pane * box["width"] / 2
    return box["x"] + offset + tx + (x + 0.5) * scale, box["y"] + ty + (y + 0.5) * scale


def _session_cookie(context: Any) -> dict[str, Any]:
    cookies = [c for c in context.cookies() if c["name"] == "diffall_session"]
    assert len(cookies) == 1, cookies
    cookie: dict[str, Any] = cookies[0]
    return cookie


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
    cookie = _session_cookie(context)
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
    cookie = _session_cookie(page.context)
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
        comparison = api.get(f"/v1/comparisons/{_comparison_id(page)}").json()
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
    page.mouse.move(*_screen_point(page, x, y))
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
    page.mouse.move(*_screen_point(page, x, y, pane=1))
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
    page.mouse.move(*_screen_point(page, x, y))
    page.mouse.wheel(0, -400)
    page.wait_for_timeout(300)
    assert float(page.locator("canvas.stage-canvas").get_attribute("data-scale")) > after
    page.mouse.move(*_screen_point(page, x, y))
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
    page.mouse.move(*_screen_point(page, x, y))
    page.mouse.down()
    page.mouse.move(*_screen_point(page, x + w // 2, y + h // 2), steps=4)
    page.mouse.move(*_screen_point(page, x + w - 1, y + h - 1), steps=4)
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
    shown = np.array(_canvas_pixel(page, *_screen_point(page, cx, cy)), dtype=float)
    expected = 0.85 * 128 + 0.15 * reference[cy, cx]
    assert np.abs(shown - expected).max() <= 4, (shown, expected)
    page.screenshot(path=artifacts / "ignore-drawn.png")

    page.get_by_role("button", name="Re-run with these areas ignored").click()
    page.wait_for_url(lambda url: re.search(r"/c/[0-9a-f-]{36}$", url) and job["id"] not in url)
    page.wait_for_selector("[data-role=verdict]", timeout=RESULT_TIMEOUT_MS)
    page.wait_for_selector("section.stage[data-images=final]", timeout=RESULT_TIMEOUT_MS)
    again_id = _comparison_id(page)
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
    page.mouse.move(*_screen_point(page, cx, cy))
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
    for index, comparison_id in enumerate(ids):
        page.wait_for_url(f"**/c/{comparison_id}")
        playwright_api.expect(nav).to_contain_text(f"pair {index + 1} of 20")
        playwright_api.expect(page.locator("[data-role=ssim]")).to_have_text(
            f"SSIM {ssims[comparison_id] * 100:.1f} %"
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
