"""Drawn UI screens and text documents for the verdict corpus (Pillow's bundled font, no system
font): a page is a list of rectangles and words laid out from its name, rendered with one of
several smoothing variants (the same page drawn again with other anti-aliasing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bench.lib.corpus_basics import SIDE, seed

WORDS = [
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
    "deliver",
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
    "monday",
    "tuesday",
    "quarterly",
    "revenue",
    "customer",
    "order",
    "total",
    "amount",
    "balance",
    "payment",
]
_PALETTES = (
    ((33, 99, 186), (245, 247, 250)),
    ((24, 128, 56), (255, 255, 255)),
    ((120, 40, 160), (250, 248, 252)),
    ((200, 80, 20), (252, 250, 246)),
    ((40, 40, 48), (238, 240, 242)),
    ((0, 120, 140), (250, 252, 252)),
)


@dataclass(frozen=True)
class PageText:
    x: int
    y: int
    text: str
    size: int
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class PageRect:
    box: tuple[int, int, int, int]
    fill: tuple[int, int, int]
    radius: int


def page_spec(name: str) -> tuple[tuple[int, int, int], list[PageRect | PageText]]:
    """Elements of a drawn page in 1x coordinates (a UI screen or a text document)."""
    rng = np.random.default_rng(seed("page", name))
    width, height = (SIDE, SIDE * 2 // 3) if name.startswith("ui") else (SIDE * 3 // 4, SIDE)
    accent, bg = _PALETTES[int(rng.integers(len(_PALETTES)))]
    items: list[PageRect | PageText] = [PageRect((0, 0, width, height), bg, 0)]
    if name.startswith("ui"):
        items.append(PageRect((0, 0, width, 36), accent, 0))
        items.append(PageText(12, 9, " ".join(rng.choice(WORDS, 2)).title(), 16, (255, 255, 255)))
        y = 52
        while y < height - 40:
            if rng.random() < 0.35:
                bw = int(rng.integers(70, 130))
                bx = int(rng.integers(12, width - bw - 12))
                items.append(PageRect((bx, y, bx + bw, y + 26), accent, 6))
                items.append(PageText(bx + 10, y + 6, str(rng.choice(WORDS)), 13, (255, 255, 255)))
                y += 38
            else:
                words = " ".join(rng.choice(WORDS, int(rng.integers(3, 6))))
                items.append(PageText(16, y, words.capitalize(), 13, (30, 30, 36)))
                y += 24
    else:
        items.append(PageText(20, 16, " ".join(rng.choice(WORDS, 3)).title(), 18, (10, 10, 10)))
        for y in range(52, height - 20, 19):
            words = " ".join(rng.choice(WORDS, int(rng.integers(3, 5))))
            items.append(PageText(20, y, words, 12, (20, 20, 20)))
    return accent, items


def _draw(
    items: list[PageRect | PageText], scale: int, size: tuple[int, int], *, smooth: bool = True
) -> Image.Image:
    canvas = Image.new("RGB", (size[0] * scale, size[1] * scale), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = "L" if smooth else "1"
    for item in items:
        if isinstance(item, PageRect):
            x0, y0, x1, y1 = (v * scale for v in item.box)
            draw.rounded_rectangle((x0, y0, x1 - 1, y1 - 1), item.radius * scale, fill=item.fill)
        else:
            font = ImageFont.load_default(size=item.size * scale)
            draw.text((item.x * scale, item.y * scale), item.text, fill=item.colour, font=font)
    return canvas


def _page_size(items: list[PageRect | PageText]) -> tuple[int, int]:
    first = items[0]
    assert isinstance(first, PageRect)
    return first.box[2], first.box[3]


def render_items(items: list[PageRect | PageText], variant: str = "lanczos") -> np.ndarray:
    """Render a page: ``lanczos``/``box``/``bilinear``/``hamming`` = drawn at 2x and downscaled
    with that filter; ``plain`` = drawn at 1x with smoothing; ``binary`` = at 1x, no smoothing."""
    size = _page_size(items)
    if variant in ("plain", "binary"):
        return np.asarray(_draw(items, 1, size, smooth=variant == "plain"))
    filters = {
        "lanczos": Image.Resampling.LANCZOS,
        "box": Image.Resampling.BOX,
        "bilinear": Image.Resampling.BILINEAR,
        "hamming": Image.Resampling.HAMMING,
    }
    big = _draw(items, 2, size)
    return np.asarray(big.resize(size, filters[variant]))


def render_page(name: str, variant: str = "lanczos") -> np.ndarray:
    return render_items(page_spec(name)[1], variant)
