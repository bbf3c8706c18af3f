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
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage import data as skdata

from bench.chromium_pages import WEB_SOURCES, noise_variants, web_pages

#: Longer side of every source image, in px.
SIDE = 384
#: A pixel belongs to the true edit box when the edit changed it by more than this (0..255).
EDIT_LABEL_LEVEL = 25

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

Box = tuple[int, int, int, int]


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


# Encoding helpers -----------------------------------------------------------------------------


def png(img: np.ndarray, **kw: object) -> bytes:
    """Lossless PNG of an ``HxWx3`` RGB array: OpenCV, fast; with Pillow options via Pillow."""
    if kw:
        out = io.BytesIO()
        Image.fromarray(img).save(out, format="PNG", **kw)
        return out.getvalue()
    ok, data = cv2.imencode(
        ".png",
        cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_PNG_COMPRESSION, 1],
    )
    assert ok
    return data.tobytes()


def jpeg(img: np.ndarray, quality: int, subsampling: int = 2) -> bytes:
    """JPEG (Pillow/libjpeg) at ``quality`` 1..95; ``subsampling`` 0 = 4:4:4, 2 = 4:2:0."""
    out = io.BytesIO()
    Image.fromarray(img).save(out, format="JPEG", quality=quality, subsampling=subsampling)
    return out.getvalue()


def webp(img: np.ndarray, quality: int, lossless: bool = False) -> bytes:
    out = io.BytesIO()
    Image.fromarray(img).save(out, format="WEBP", quality=quality, lossless=lossless, method=4)
    return out.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


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


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(str(p) for p in parts).encode())


# Drawn pages ----------------------------------------------------------------------------------

_WORDS = [
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
class _Text:
    x: int
    y: int
    text: str
    size: int
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class _Rect:
    box: tuple[int, int, int, int]
    fill: tuple[int, int, int]
    radius: int


def _page_spec(name: str) -> tuple[tuple[int, int, int], list[_Rect | _Text]]:
    """Elements of a drawn page in 1x coordinates (a UI screen or a text document)."""
    rng = np.random.default_rng(_seed("page", name))
    width, height = (SIDE, SIDE * 2 // 3) if name.startswith("ui") else (SIDE * 3 // 4, SIDE)
    accent, bg = _PALETTES[int(rng.integers(len(_PALETTES)))]
    items: list[_Rect | _Text] = [_Rect((0, 0, width, height), bg, 0)]
    if name.startswith("ui"):
        items.append(_Rect((0, 0, width, 36), accent, 0))
        items.append(_Text(12, 9, " ".join(rng.choice(_WORDS, 2)).title(), 16, (255, 255, 255)))
        y = 52
        while y < height - 40:
            if rng.random() < 0.35:
                bw = int(rng.integers(70, 130))
                bx = int(rng.integers(12, width - bw - 12))
                items.append(_Rect((bx, y, bx + bw, y + 26), accent, 6))
                items.append(_Text(bx + 10, y + 6, str(rng.choice(_WORDS)), 13, (255, 255, 255)))
                y += 38
            else:
                words = " ".join(rng.choice(_WORDS, int(rng.integers(3, 6))))
                items.append(_Text(16, y, words.capitalize(), 13, (30, 30, 36)))
                y += 24
    else:
        items.append(_Text(20, 16, " ".join(rng.choice(_WORDS, 3)).title(), 18, (10, 10, 10)))
        for y in range(52, height - 20, 19):
            words = " ".join(rng.choice(_WORDS, int(rng.integers(3, 5))))
            items.append(_Text(20, y, words, 12, (20, 20, 20)))
    return accent, items


def _draw(
    items: list[_Rect | _Text], scale: int, size: tuple[int, int], *, smooth: bool = True
) -> Image.Image:
    canvas = Image.new("RGB", (size[0] * scale, size[1] * scale), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = "L" if smooth else "1"
    for item in items:
        if isinstance(item, _Rect):
            x0, y0, x1, y1 = (v * scale for v in item.box)
            draw.rounded_rectangle((x0, y0, x1 - 1, y1 - 1), item.radius * scale, fill=item.fill)
        else:
            font = ImageFont.load_default(size=item.size * scale)
            draw.text((item.x * scale, item.y * scale), item.text, fill=item.colour, font=font)
    return canvas


def _page_size(items: list[_Rect | _Text]) -> tuple[int, int]:
    first = items[0]
    assert isinstance(first, _Rect)
    return first.box[2], first.box[3]


def render_items(items: list[_Rect | _Text], variant: str = "lanczos") -> np.ndarray:
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
    return render_items(_page_spec(name)[1], variant)


# Edits ----------------------------------------------------------------------------------------


def _changed_box(a: np.ndarray, b: np.ndarray) -> Box | None:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > EDIT_LABEL_LEVEL
    if not diff.any():
        return None
    ys, xs = np.nonzero(diff)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def _busy_box(img: np.ndarray, rng: np.random.Generator, w: int, h: int) -> tuple[int, int]:
    """Top-left corner of a ``w x h`` box over detail (highest local std of 12 candidates)."""
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    best, best_std = (0, 0), -1.0
    for _ in range(12):
        x = int(rng.integers(4, img.shape[1] - w - 4))
        y = int(rng.integers(4, img.shape[0] - h - 4))
        std = float(grey[y : y + h, x : x + w].std())
        if std > best_std:
            best, best_std = (x, y), std
    return best


def _edit_size(img: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    side = min(img.shape[:2])
    return int(side * rng.uniform(0.1, 0.2)), int(side * rng.uniform(0.1, 0.2))


def paste_object(img: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> np.ndarray:
    """Paste an elliptical piece of ``donor`` (another photo) somewhere in ``img``."""
    w, h = _edit_size(img, rng)
    x = int(rng.integers(4, img.shape[1] - w - 4))
    y = int(rng.integers(4, img.shape[0] - h - 4))
    dx = int(rng.integers(0, donor.shape[1] - w))
    dy = int(rng.integers(0, donor.shape[0] - h))
    piece = donor[dy : dy + h, dx : dx + w]
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 1, -1)
    out = img.copy()
    region = out[y : y + h, x : x + w]
    region[mask == 1] = piece[mask == 1]
    if _changed_box(img, out) is None:  # the donor matched: paint it red instead
        region[mask == 1] = (220, 30, 30)
    return out


def clone_patch(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Copy a detailed patch of ``img`` onto another place of itself (clone stamp)."""
    w, h = _edit_size(img, rng)
    sx, sy = _busy_box(img, rng, w, h)
    out = img.copy()
    for _ in range(20):
        x = int(rng.integers(4, img.shape[1] - w - 4))
        y = int(rng.integers(4, img.shape[0] - h - 4))
        if abs(x - sx) > w or abs(y - sy) > h:
            break
    out[y : y + h, x : x + w] = img[sy : sy + h, sx : sx + w]
    if _changed_box(img, out) is None:
        out[y : y + h, x : x + w] = 255 - img[y : y + h, x : x + w]
    return out


def remove_object(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint out a detailed area (OpenCV Telea inpainting), as a retoucher removes an object."""
    w, h = _edit_size(img, rng)
    x, y = _busy_box(img, rng, w, h)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(mask, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, 255, -1)
    out = cv2.inpaint(img, mask, 5, cv2.INPAINT_TELEA)
    if _changed_box(img, out) is None:
        out[mask > 0] = (20, 200, 40)
    return np.ascontiguousarray(out)


def add_text(img: np.ndarray, rng: np.random.Generator, *, watermark: bool) -> np.ndarray:
    """Draw a word (opaque) or a half-transparent watermark word in a corner."""
    pil = Image.fromarray(img).convert("RGBA")
    layer = Image.new("RGBA", pil.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = max(12, min(img.shape[:2]) // 12)
    font = ImageFont.load_default(size=size)
    word = "SAMPLE" if watermark else str(rng.choice(_WORDS))
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    x = int(rng.integers(4, max(5, img.shape[1] - (right - left) - 4)))
    y = int(rng.integers(4, max(5, img.shape[0] - (bottom - top) - 8)))
    mean = img.mean()
    colour = (255, 255, 255) if mean < 128 else (0, 0, 0)
    alpha = 140 if watermark else 255
    draw.text((x, y), word, fill=(*colour, alpha), font=font)
    if not watermark:
        draw.text((x + 1, y + 1), word, fill=(*((255 - colour[0],) * 3), 160), font=font)
    return np.asarray(Image.alpha_composite(pil, layer).convert("RGB"))


# Global transforms ----------------------------------------------------------------------------


def rotate(img: np.ndarray, degrees: float, scale: float = 1.0) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, scale)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def perspective(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float32)
    jitter = rng.uniform(0.02, 0.07, size=(4, 2)) * np.array([w, h])
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]])
    dst = (src + jitter * signs).astype(np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def shift(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
    h, w = img.shape[:2]
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)


def gamma(img: np.ndarray, g: float) -> np.ndarray:
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** g + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(lut[img])


def adjust(img: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return np.clip(img.astype(np.float32) * gain + offset + 0.5, 0, 255).astype(np.uint8)


def greyscale(img: np.ndarray) -> np.ndarray:
    grey = np.asarray(Image.fromarray(img).convert("L"))
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))


#: sRGB-linear to Display-P3-linear (so sRGB numbers read as P3: a colour-profile mix-up).
_SRGB_TO_P3 = np.array(
    [[0.8225, 0.1774, 0.0000], [0.0332, 0.9669, 0.0000], [0.0171, 0.0724, 0.9108]]
)


def profile_convert(img: np.ndarray) -> np.ndarray:
    """sRGB pixels converted to Display P3 and left untagged (the usual profile mistake)."""
    lin = (img / 255.0) ** 2.2
    p3 = np.clip(lin @ _SRGB_TO_P3.T, 0, 1) ** (1 / 2.2)
    return (p3 * 255 + 0.5).astype(np.uint8)


def saturate(img: np.ndarray, factor: float) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] = np.clip(hsv[..., 1] * factor, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


# Pairs ----------------------------------------------------------------------------------------

PairMaker = Callable[[np.ndarray, np.random.Generator, str], Iterator[Pair]]


def _photo_pairs(name: str) -> Iterator[Pair]:
    a = source_image(name)
    h, w = a.shape[:2]
    pa = png(a)
    rng = np.random.default_rng(_seed("photo", name))
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
        box = _changed_box(a, b_img)
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
            box = _changed_box(b_multi, step)
            if box is None:
                continue
            if all(_gap(box, other) > 12 for other in boxes):
                b_multi = step
                boxes.append(box)
                break
    yield pair("multi", png(b_multi), LOCAL, boxes=tuple(boxes), causes=("edit",))

    # An edit, then a re-encode or a small warp of the whole image.
    b_edit = paste_object(a, rng, donor)
    box = _changed_box(a, b_edit)
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
    _accent, items = _page_spec(name)
    a = render_items(items)
    pa = png(a)
    rng = np.random.default_rng(_seed("pagepairs", name))

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
    texts = [i for i, item in enumerate(items) if isinstance(item, _Text)]
    for _ in range(3):
        index = texts[int(rng.integers(1, len(texts)))]
        old = items[index]
        assert isinstance(old, _Text)
        words = old.text.split()
        k = int(rng.integers(len(words)))
        choices = [
            wd for wd in _WORDS if wd != words[k].lower() and abs(len(wd) - len(words[k])) <= 2
        ]
        words[k] = str(rng.choice(choices))
        new_items = list(items)
        new_items[index] = _Text(old.x, old.y, " ".join(words), old.size, old.colour)
        b = render_items(new_items)
        box = _changed_box(a, b)
        if box is not None:
            yield pair("ui_word", b, LOCAL, boxes=(box,), causes=("edit",))
    # A word changed and the page rendered with other smoothing: the word is still an edit.
    b_aa = render_items(new_items, "box")
    box = _changed_box(a, render_items(new_items))
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
        box = _changed_box(a, renders[truth])
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
