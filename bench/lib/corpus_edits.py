"""Edits and global transforms of the verdict corpus: pasted, cloned and removed objects, text
and watermarks, rotations, perspective, shifts, tone and colour changes, and the true edit box.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bench.lib.corpus_pages import WORDS

#: A box ``(x, y, width, height)`` in A's pixel coordinates.
Box = tuple[int, int, int, int]
#: A pixel belongs to the true edit box when the edit changed it by more than this (0..255).
EDIT_LABEL_LEVEL = 25


def changed_box(a: np.ndarray, b: np.ndarray) -> Box | None:
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
    if changed_box(img, out) is None:  # the donor matched: paint it red instead
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
    if changed_box(img, out) is None:
        out[y : y + h, x : x + w] = 255 - img[y : y + h, x : x + w]
    return out


def remove_object(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint out a detailed area (OpenCV Telea inpainting), as a retoucher removes an object."""
    w, h = _edit_size(img, rng)
    x, y = _busy_box(img, rng, w, h)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(mask, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, 255, -1)
    out = cv2.inpaint(img, mask, 5, cv2.INPAINT_TELEA)
    if changed_box(img, out) is None:
        out[mask > 0] = (20, 200, 40)
    return np.ascontiguousarray(out)


def add_text(img: np.ndarray, rng: np.random.Generator, *, watermark: bool) -> np.ndarray:
    """Draw a word (opaque) or a half-transparent watermark word in a corner."""
    pil = Image.fromarray(img).convert("RGBA")
    layer = Image.new("RGBA", pil.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = max(12, min(img.shape[:2]) // 12)
    font = ImageFont.load_default(size=size)
    word = "SAMPLE" if watermark else str(rng.choice(WORDS))
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
