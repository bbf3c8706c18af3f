"""A labelled corpus of image pairs for the verdict benchmark, built offline and deterministically.

Sources: the photographs and scans bundled with scikit-image that load without a download
(``PHOTO_SOURCES``), scaled so the longer side is ``SIDE`` px, plus drawn UI screens and text
documents rendered with Pillow's bundled font (``ImageFont.load_default``, no system font needed).
Every source yields pairs of several categories; each pair carries the verdicts a person would
accept and, for edits, the boxes of the true edit in A's pixel coordinates (the bounding box of
the pixels the edit changed by more than ``EDIT_LABEL_LEVEL`` levels, measured before any later
re-encoding or warp).

The split is by source (never one source in both halves): ``split_of(source)`` is fixed by the
source's position in the sorted list, alternating, so the tuning half and the held-out half each
hold photographs, scans and drawn pages.

Categories and the verdicts accepted (``auto`` mode; pixel mode in brackets where it differs):

================  =============================================  ===========================
category          B is A after ...                               accepted verdicts
================  =============================================  ===========================
lossless          a PNG re-save, lossless WebP, optimised PNG    identical
jpeg_high         a JPEG re-encode at quality 90 or 95           identical, global_change
jpeg_low          a JPEG re-encode at quality 40 or 60           global_change
webp              a lossy WebP at quality 50 or 85               identical, global_change
png_quantise      a 256-colour palette (pngquant-like)           identical, global_change
chroma            JPEG q95 4:4:4 against JPEG q95 4:2:0          identical, global_change
resize            a 50-75 % downscale (or down and up again)     global_change (identical)
blur              a Gaussian blur, sigma 1-2 px                  global_change
tone              brightness, gamma or contrast                  global_change
colour            greyscale, a colour-profile matrix, saturation global_change
flip              a horizontal or vertical mirror                identical [misaligned]
crop              a crop of 70-90 % of each side                 identical
rotation          a 2-12 degree or 90 degree rotation            identical [misaligned]
perspective       a phone-photo perspective warp                 identical [misaligned]
shift             a 1-3 px shift                                 identical [misaligned]
pasted            a pasted object (another photo's piece)        localized_edit
cloned            a patch cloned from elsewhere in A             localized_edit
removed           an object painted out (inpainted)              localized_edit
text              a word or a small watermark added              localized_edit
multi             two or three edits at once                     localized_edit
edit_moved        an edit, then a JPEG re-encode or a warp       localized_edit
unrelated         another source altogether                      different
ui_word           (UI / document) one word changed               localized_edit
antialias         (UI / document) the same page, other smoothing identical
web_antialias     (Chromium-rendered page) other text rendering  identical
web_word          (Chromium-rendered page) one word changed      localized_edit
================  =============================================  ===========================
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache

import cv2
import numpy as np
from PIL import Image
from skimage import data as skdata

from bench.chromium_pages import WEB_SOURCES, noise_variants, web_pages
from bench.lib.corpus_basics import SIDE, jpeg, png, seed, webp
from bench.lib.corpus_edits import (
    Box,
    add_text,
    adjust,
    changed_box,
    clone_patch,
    gamma,
    greyscale,
    paste_object,
    perspective,
    profile_convert,
    remove_object,
    rotate,
    saturate,
    shift,
)
from bench.lib.corpus_pages import WORDS, PageText, page_spec, render_items, render_page

#: scikit-image samples that ship with the package (no download), by name.
PHOTO_SOURCES: tuple[str, ...] = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)
UI_SOURCES: tuple[str, ...] = tuple(f"ui{i}" for i in range(6)) + tuple(f"doc{i}" for i in range(4))

IDENTICAL = ("identical",)
GLOBAL = ("global_change",)
NEAR = ("identical", "global_change")
LOCAL = ("localized_edit",)
DIFFERENT = ("different",)
#: Categories whose B is A moved: pixel mode should call them misaligned.
MOVED = frozenset({"flip", "rotation", "perspective", "shift"})


@dataclass(frozen=True)
class Pair:
    """One labelled pair: encoded A and B, what a person would call it, where the edits are."""

    name: str
    source: str
    category: str
    a: bytes
    b: bytes
    accept: tuple[str, ...]
    #: Verdicts accepted in pixel mode, or None when pixel mode does not apply (sizes differ).
    accept_pixel: tuple[str, ...] | None
    boxes: tuple[Box, ...] = field(default_factory=tuple)
    #: Finding kinds the pair should report (what happened to the file).
    causes: tuple[str, ...] = field(default_factory=tuple)


def split_of(source: str) -> str:
    """``"tune"`` or ``"held_out"``: alternate over the sorted photo, UI and web sources."""
    for group in (PHOTO_SOURCES, UI_SOURCES, WEB_SOURCES):
        if source in group:
            return "tune" if sorted(group).index(source) % 2 == 0 else "held_out"
    raise KeyError(source)


# Sources --------------------------------------------------------------------------------------


def _rgb(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:  # composite on white
        alpha = img[..., 3:4].astype(np.float32) / 255.0
        img = (img[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(img[..., :3])


def _fit(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    k = SIDE / max(h, w)
    size = (max(16, round(w * k)), max(16, round(h * k)))
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(img, size, interpolation=interp))


@cache
def source_image(name: str) -> np.ndarray:
    """The source ``name`` as an ``HxWx3`` RGB ``uint8`` array, longer side ``SIDE`` px."""
    if name in UI_SOURCES:
        return render_page(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = getattr(skdata, name)()
    img = _fit(_rgb(raw))
    img.setflags(write=False)
    return img


# Pairs ----------------------------------------------------------------------------------------

PairMaker = Callable[[np.ndarray, np.random.Generator, str], Iterator[Pair]]


def _photo_pairs(name: str) -> Iterator[Pair]:
    a = source_image(name)
    h, w = a.shape[:2]
    pa = png(a)
    rng = np.random.default_rng(seed("photo", name))
    same_split = [s for s in PHOTO_SOURCES if s != name and split_of(s) == split_of(name)]
    donor = source_image(same_split[int(rng.integers(len(same_split)))])

    def pair(category: str, b: bytes, accept: tuple[str, ...], **kw: object) -> Pair:
        decoded_b = Image.open(io.BytesIO(b))
        same_size = decoded_b.size == (w, h)
        pixel = kw.pop("accept_pixel", accept)
        pixel = pixel if same_size else None
        return Pair(
            name=f"{name}/{category}",
            source=name,
            category=category,
            a=pa,
            b=b,
            accept=accept,
            accept_pixel=pixel,  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )

    lossless = int(rng.integers(3))
    b_lossless = (
        png(a, compress_level=1),
        webp(a, 100, lossless=True),
        png(a, optimize=True),
    )[lossless]
    yield pair("lossless", b_lossless, IDENTICAL, causes=("lossless",))
    yield pair("jpeg_high", jpeg(a, int(rng.choice([90, 95]))), NEAR, causes=("jpeg",))
    yield pair("jpeg_low", jpeg(a, int(rng.choice([40, 60]))), GLOBAL, causes=("jpeg",))
    yield pair("webp", webp(a, int(rng.choice([50, 85]))), NEAR)
    quant = Image.fromarray(a).quantize(
        256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    yield pair("png_quantise", png(np.asarray(quant.convert("RGB"))), NEAR)
    yield Pair(
        name=f"{name}/chroma",
        source=name,
        category="chroma",
        a=jpeg(a, 95, subsampling=0),
        b=jpeg(a, 95, subsampling=2),
        accept=NEAR,
        accept_pixel=NEAR,
        causes=("chroma_subsampling",),
    )
    k = float(rng.choice([0.5, 0.75]))
    small = cv2.resize(a, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        yield pair("resize", png(small), GLOBAL + IDENTICAL, causes=("resampled",))
    else:
        up = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        yield pair("resize", png(up), GLOBAL, causes=("resampled",))
    sigma = float(rng.uniform(1.0, 2.0))
    yield pair("blur", png(cv2.GaussianBlur(a, (0, 0), sigma)), GLOBAL, causes=("blur",))
    tone = int(rng.integers(3))
    b_tone = (adjust(a, 1.0, 25.0), gamma(a, 0.7), adjust(a, 1.25, -30.0))[tone]
    yield pair("tone", png(b_tone), GLOBAL, causes=("tone",))
    colourful = float(np.std(a.astype(np.int16) - a.mean(axis=2, keepdims=True))) > 6
    if colourful:
        kind = int(rng.integers(3))
        b_colour = (greyscale(a), profile_convert(a), saturate(a, 1.6))[kind]
        cause = ("greyscale", "colour", "colour")[kind]
    else:
        tint = np.array([1.0, 0.88, 0.7], dtype=np.float32)  # a sepia cast on a grey scan
        b_colour, cause = np.clip(a * tint + 0.5, 0, 255).astype(np.uint8), "colour"
    yield pair("colour", png(b_colour), GLOBAL, causes=(cause,))
    flip = int(rng.integers(2))
    yield pair(
        "flip",
        png(np.ascontiguousarray(a[:, ::-1] if flip == 0 else a[::-1])),
        IDENTICAL,
        accept_pixel=("misaligned",),
        causes=("flip",),
    )
    cw, ch = round(w * rng.uniform(0.7, 0.9)), round(h * rng.uniform(0.7, 0.9))
    cx, cy = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
    yield pair(
        "crop",
        png(np.ascontiguousarray(a[cy : cy + ch, cx : cx + cw])),
        IDENTICAL,
        causes=("crop",),
    )
    angle = float(rng.choice([-1, 1]) * rng.uniform(2.0, 12.0))
    if rng.random() < 0.2:
        b_rot = np.ascontiguousarray(np.rot90(a))
        yield pair("rotation", png(b_rot), IDENTICAL, causes=("rotation",))
    else:
        yield pair(
            "rotation",
            png(rotate(a, angle)),
            IDENTICAL,
            accept_pixel=("misaligned",),
            causes=("rotation",),
        )
    yield pair(
        "perspective",
        png(perspective(a, rng)),
        IDENTICAL,
        accept_pixel=("misaligned",),
        causes=("perspective",),
    )
    dx, dy = int(rng.integers(-3, 4)), int(rng.integers(1, 4)) * int(rng.choice([-1, 1]))
    yield pair(
        "shift", png(shift(a, dx, dy)), IDENTICAL, accept_pixel=("misaligned",), causes=("shift",)
    )

    def edit(category: str, b_img: np.ndarray, **kw: object) -> Pair:
        box = changed_box(a, b_img)
        assert box is not None, (name, category)
        return pair(category, png(b_img), LOCAL, boxes=(box,), causes=("edit",), **kw)

    yield edit("pasted", paste_object(a, rng, donor))
    yield edit("cloned", clone_patch(a, rng))
    yield edit("removed", remove_object(a, rng))
    yield edit("text", add_text(a, rng, watermark=bool(rng.random() < 0.5)))

    # Several edits at once, apart from one another.
    b_multi = a.copy()
    boxes: list[Box] = []
    for _ in range(int(rng.integers(2, 4))):
        for _attempt in range(20):
            step = (
                paste_object(b_multi, rng, donor)
                if rng.random() < 0.6
                else clone_patch(b_multi, rng)
            )
            box = changed_box(b_multi, step)
            if box is None:
                continue
            if all(_gap(box, other) > 12 for other in boxes):
                b_multi = step
                boxes.append(box)
                break
    yield pair("multi", png(b_multi), LOCAL, boxes=tuple(boxes), causes=("edit",))

    # An edit, then a re-encode or a small warp of the whole image.
    b_edit = paste_object(a, rng, donor)
    box = changed_box(a, b_edit)
    assert box is not None
    if rng.random() < 0.5:
        b_bytes = jpeg(b_edit, int(rng.choice([85, 92])))
        yield pair("edit_moved", b_bytes, LOCAL, boxes=(box,), causes=("edit", "jpeg"))
    else:
        b_bytes = png(rotate(b_edit, float(rng.uniform(2.0, 6.0))))
        yield pair(
            "edit_moved",
            b_bytes,
            LOCAL,
            boxes=(box,),
            accept_pixel=("misaligned",),
            causes=("edit", "rotation"),
        )

    other = same_split[int(rng.integers(len(same_split)))]
    b_other = source_image(other)
    if b_other.shape != a.shape and rng.random() < 0.5:
        b_other = cv2.resize(b_other, (w, h), interpolation=cv2.INTER_AREA)
    yield pair("unrelated", png(b_other), DIFFERENT, accept_pixel=DIFFERENT)


def _gap(a: Box, b: Box) -> int:
    """Gap in px between two boxes (0 when they touch or overlap)."""
    gx = max(b[0] - (a[0] + a[2]), a[0] - (b[0] + b[2]), 0)
    gy = max(b[1] - (a[1] + a[3]), a[1] - (b[1] + b[3]), 0)
    return max(gx, gy)


def _page_pairs(name: str) -> Iterator[Pair]:
    _accent, items = page_spec(name)
    a = render_items(items)
    pa = png(a)
    rng = np.random.default_rng(seed("pagepairs", name))

    def pair(category: str, b: np.ndarray | bytes, accept: tuple[str, ...], **kw: object) -> Pair:
        return Pair(
            name=f"{name}/{category}",
            source=name,
            category=category,
            a=pa,
            b=b if isinstance(b, bytes) else png(b),
            accept=accept,
            accept_pixel=kw.pop("accept_pixel", accept),  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )

    for variant in ("box", "bilinear", "hamming"):
        yield pair("antialias", render_items(items, variant), IDENTICAL, causes=("antialias",))
    texts = [i for i, item in enumerate(items) if isinstance(item, PageText)]
    for _ in range(3):
        index = texts[int(rng.integers(1, len(texts)))]
        old = items[index]
        assert isinstance(old, PageText)
        words = old.text.split()
        k = int(rng.integers(len(words)))
        choices = [
            wd for wd in WORDS if wd != words[k].lower() and abs(len(wd) - len(words[k])) <= 2
        ]
        words[k] = str(rng.choice(choices))
        new_items = list(items)
        new_items[index] = PageText(old.x, old.y, " ".join(words), old.size, old.colour)
        b = render_items(new_items)
        box = changed_box(a, b)
        if box is not None:
            yield pair("ui_word", b, LOCAL, boxes=(box,), causes=("edit",))
    # A word changed and the page rendered with other smoothing: the word is still an edit.
    b_aa = render_items(new_items, "box")
    box = changed_box(a, render_items(new_items))
    if box is not None:
        yield pair("ui_word", b_aa, LOCAL, boxes=(box,), causes=("edit", "antialias"))
    yield pair("lossless", png(a, optimize=True), IDENTICAL, causes=("lossless",))
    yield pair("jpeg_high", jpeg(a, 92), NEAR, causes=("jpeg",))
    yield pair(
        "shift",
        shift(a, int(rng.integers(1, 3)), 0),
        IDENTICAL,
        accept_pixel=("misaligned",),
        causes=("shift",),
    )
    others = [s for s in UI_SOURCES if s != name and s[:2] == name[:2]]
    yield pair("unrelated", render_page(others[int(rng.integers(len(others)))]), DIFFERENT)


def _web_pairs(name: str, renders: dict[str, np.ndarray]) -> Iterator[Pair]:
    """Pairs of one Chromium-rendered page (``bench.chromium_pages``)."""
    a = renders["a"]
    pa = png(a)

    def pair(category: str, b: np.ndarray, accept: tuple[str, ...], **kw: object) -> Pair:
        variant = kw.pop("variant")
        return Pair(
            name=f"{name}/{category}/{variant}",
            source=name,
            category=category,
            a=pa,
            b=png(b),
            accept=accept,
            accept_pixel=accept,
            **kw,  # type: ignore[arg-type]
        )

    for variant in noise_variants():
        b = renders[variant]
        if not np.array_equal(a, b):
            yield pair("web_antialias", b, IDENTICAL, causes=("antialias",), variant=variant)
    for variant, truth in (("word0", "word0"), ("word1", "word1"), ("word1_offset", "word1")):
        box = changed_box(a, renders[truth])
        if box is not None:
            causes = ("edit", "antialias") if variant != truth else ("edit",)
            yield pair(
                "web_word", renders[variant], LOCAL, boxes=(box,), causes=causes, variant=variant
            )


def build_corpus(sources: tuple[str, ...] | None = None) -> list[Pair]:
    """Every pair of the corpus (or of the named sources), in a fixed order. The web sources
    need Debian's Chromium (``bench.chromium_pages``)."""
    chosen = sources or PHOTO_SOURCES + UI_SOURCES + WEB_SOURCES
    web = tuple(name for name in chosen if name in WEB_SOURCES)
    renders = web_pages(web) if web else {}  # one browser launch per setup for all of them
    pairs: list[Pair] = []
    for name in chosen:
        if name in WEB_SOURCES:
            pairs.extend(_web_pairs(name, renders[name]))
        elif name in UI_SOURCES:
            pairs.extend(_page_pairs(name))
        else:
            pairs.extend(_photo_pairs(name))
    return pairs
