"""UI pages rendered by a real browser for the verdict corpus: Debian's Chromium (headless, driven
by Playwright with ``executable_path``), each page rendered twice with other text anti-aliasing
or at another device scale, and with one word changed.

The pages are generated HTML (a header bar, a heading, a form, a table, buttons, paragraphs) with
words and colours drawn from a seeded generator, and no external resource. Each source gives:

=================  ======================================================  ===================
category           B                                                       verdict
=================  ======================================================  ===================
``web_antialias``  the same page rendered otherwise: without subpixel      identical
                   glyph positioning, with ``text-rendering:
                   geometricPrecision``, moved by a third of a pixel
                   (every edge re-rasterised), or at device scale 2 and
                   reduced to 1x with a Lanczos filter (renders equal to
                   A are left out)
``web_word``       one word of the page replaced (A's rendering; once      localized_edit
                   also moved by a third of a pixel)
=================  ======================================================  ===================

The edit box is where a same-rendering B differs from A by more than
``verdict_corpus.EDIT_LABEL_LEVEL``. Rendering is deterministic for one Chromium build and one
set of fonts, so the corpus is the same on every run on a machine.
"""

from __future__ import annotations

import html
import io
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["CHROMIUM", "WEB_SOURCES", "noise_variants", "render_html", "web_page", "web_pages"]

#: Debian's Chromium (``scripts/services.sh`` installs it when missing).
CHROMIUM = "/usr/bin/chromium"
#: The browser-rendered sources: alternate halves like the other sources.
WEB_SOURCES: tuple[str, ...] = tuple(f"web{i}" for i in range(8))
#: CSS pixels of the viewport; the screenshot is this size at device scale 1.
VIEWPORT = (480, 320)

_BASE_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
#: Rendering setups: Chromium flags, the device scale factor, and CSS added to the page.
_SETUPS: dict[str, tuple[tuple[str, ...], int, str]] = {
    "a": ((), 1, ""),
    "no_subpixel_positioning": (("--disable-font-subpixel-positioning",), 1, ""),
    "geometric": ((), 1, "body { text-rendering: geometricPrecision; }"),
    "offset": ((), 1, "main, header { transform: translate(0.33px, 0.25px); }"),
    "scale2": ((), 2, ""),
}

_WORDS = (
    "account",
    "settings",
    "profile",
    "billing",
    "invoice",
    "export",
    "report",
    "status",
    "active",
    "pending",
    "shipped",
    "review",
    "approve",
    "reject",
    "search",
    "filter",
    "upload",
    "download",
    "archive",
    "restore",
    "refresh",
    "quarterly",
    "revenue",
    "customer",
    "order",
    "total",
    "amount",
    "balance",
    "payment",
    "monday",
    "tuesday",
    "delivery",
    "summary",
)
_ACCENTS = ("#2163ba", "#188038", "#7828a0", "#c8501a", "#28282f", "#00788c", "#b0164a", "#3d5a80")


def _words(rng: np.random.Generator, n: int) -> list[str]:
    return [str(w) for w in rng.choice(_WORDS, n)]


def _spec(name: str) -> dict[str, object]:
    """The page's content: deterministic in ``name``."""
    index = WEB_SOURCES.index(name)
    rng = np.random.default_rng(9000 + index)
    rows = [
        [w.title(), f"{int(rng.integers(10, 9999))}.{int(rng.integers(0, 99)):02d}"]
        for w in _words(rng, 4)
    ]
    return {
        "accent": _ACCENTS[index % len(_ACCENTS)],
        "title": " ".join(_words(rng, 3)).title(),
        "labels": [w.title() for w in _words(rng, 2)],
        "paragraph": " ".join(_words(rng, 14)).capitalize() + ".",
        "rows": rows,
        "buttons": [w.title() for w in _words(rng, 2)],
        "font": ("sans-serif", "serif", "monospace")[index % 3],
        "size": 13 + index % 3,
    }


def _html(spec: dict[str, object]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(a)}</td><td class=n>{e(b)}</td></tr>"
        for a, b in spec["rows"]  # type: ignore[attr-defined]
    )
    labels = "".join(
        f"<label>{e(label)}<input value='{e(label.lower())}'></label>"
        for label in spec["labels"]  # type: ignore[attr-defined]
    )
    buttons = "".join(f"<button>{e(b)}</button>" for b in spec["buttons"])  # type: ignore[attr-defined]
    return f"""<!doctype html><html><head><meta charset=utf-8><style>
* {{ box-sizing: border-box; }}
body {{ margin: 0; font: {spec["size"]}px {spec["font"]}; color: #1d1d22; background: #fbfbfd; }}
header {{ background: {spec["accent"]}; color: #fff; padding: 10px 16px; font-weight: bold; }}
main {{ padding: 8px 16px; }}
h1 {{ font-size: 1.3em; margin: 4px 0 8px; }}
label {{ display: inline-block; margin: 0 12px 8px 0; }}
input {{ display: block; width: 140px; margin-top: 2px; font: inherit; padding: 3px 5px;
  border: 1px solid #99a; border-radius: 4px; }}
table {{ border-collapse: collapse; margin: 4px 0 8px; }}
td {{ border-bottom: 1px solid #dde; padding: 2px 14px 2px 0; }}
td.n {{ text-align: right; }}
button {{ font: inherit; margin-right: 8px; padding: 4px 12px; border-radius: 14px;
  border: 1px solid {spec["accent"]}; background: #fff; color: {spec["accent"]}; }}
p {{ margin: 6px 0; max-width: 440px; }}
</style></head><body><header>{e(str(spec["title"]))}</header><main>
<h1>{e(str(spec["title"]))}</h1>{labels}<table>{rows}</table><div>{buttons}</div>
<p>{e(str(spec["paragraph"]))}</p></main></body></html>"""


def render_html(pages: list[str], setup: str) -> list[np.ndarray]:
    """Screenshots of ``pages`` (HTML documents) with one rendering setup, as ``HxWx3`` RGB
    ``uint8`` arrays of ``VIEWPORT`` size (a device-scale-2 render is reduced with Lanczos)."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            f"{CHROMIUM} is missing: install Debian's chromium (scripts/services.sh does) to "
            "build the browser-rendered pairs"
        )
    from playwright.sync_api import sync_playwright

    flags, scale, css = _SETUPS[setup]
    shots: list[np.ndarray] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*_BASE_ARGS, *flags], headless=True
        )
        try:
            context = browser.new_context(
                viewport={"width": VIEWPORT[0], "height": VIEWPORT[1]},
                device_scale_factor=scale,
                offline=True,
            )
            page = context.new_page()
            for document in pages:
                if css:
                    document = document.replace("</style>", css + "</style>", 1)
                page.set_content(document, wait_until="load")
                png = page.screenshot(type="png")
                with Image.open(io.BytesIO(png)) as image:
                    rgb = image.convert("RGB")
                    if rgb.size != VIEWPORT:
                        rgb = rgb.resize(VIEWPORT, Image.Resampling.LANCZOS)
                    shots.append(np.asarray(rgb))
        finally:
            browser.close()
    return shots


def _edited(spec: dict[str, object], rng: np.random.Generator) -> dict[str, object]:
    """``spec`` with one word of its paragraph, a label or a table cell replaced."""
    out = dict(spec)
    where = int(rng.integers(3))
    if where == 0:
        words = str(spec["paragraph"]).rstrip(".").split()
        k = int(rng.integers(1, len(words)))
        words[k] = str(rng.choice([w for w in _WORDS if w != words[k]]))
        out["paragraph"] = " ".join(words) + "."
    elif where == 1:
        labels = list(spec["labels"])  # type: ignore[call-overload]
        k = int(rng.integers(len(labels)))
        labels[k] = str(rng.choice([w for w in _WORDS if w.title() != labels[k]])).title()
        out["labels"] = labels
    else:
        rows = [list(r) for r in spec["rows"]]  # type: ignore[attr-defined]
        k = int(rng.integers(len(rows)))
        rows[k][0] = str(rng.choice([w for w in _WORDS if w.title() != rows[k][0]])).title()
        out["rows"] = rows
    return out


@cache
def web_pages(names: tuple[str, ...]) -> dict[str, dict[str, np.ndarray]]:
    """The renders of the sources ``names`` (each in ``WEB_SOURCES``), one browser launch per
    rendering setup: ``{source: {variant: image}}``; see ``web_page`` for the variants."""
    docs: dict[str, dict[str, tuple[str, str]]] = {}
    for name in names:
        spec = _spec(name)
        rng = np.random.default_rng(9100 + WEB_SOURCES.index(name))
        edits = [_html(_edited(spec, rng)) for _ in range(2)]
        docs[name] = {setup: (_html(spec), setup) for setup in _SETUPS}
        docs[name].update(
            {
                "word0": (edits[0], "a"),
                "word1": (edits[1], "a"),
                "word1_offset": (edits[1], "offset"),
            }
        )
    out: dict[str, dict[str, np.ndarray]] = {name: {} for name in names}
    for setup in _SETUPS:
        jobs = [
            (n, v, d)
            for n, variants in docs.items()
            for v, (d, s) in variants.items()
            if s == setup
        ]
        for (name, variant, _), shot in zip(
            jobs, render_html([d for _, _, d in jobs], setup), strict=True
        ):
            out[name][variant] = shot
    return out


def web_page(name: str) -> dict[str, np.ndarray]:
    """The renders of source ``name``: ``a`` (A), the noise variants (``noise_variants``),
    and the one-word edits ``word0``, ``word1`` (A's rendering) and ``word1_offset`` (the
    ``offset`` rendering). Rendered once per process."""
    return web_pages((name,))[name]


def noise_variants() -> Iterator[str]:
    """Names of the renders that differ from A only by rendering (some may equal A)."""
    yield from (setup for setup in _SETUPS if setup != "a")
