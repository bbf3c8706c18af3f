"""Test images, made by code: photographs from scikit-image's bundled samples (seeded grain, no
downloads), their encodings, edited and damaged variants."""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache

import cv2
import numpy as np
from PIL import Image
from skimage import data


@cache
def _source(name: str) -> np.ndarray:
    return np.ascontiguousarray(getattr(data, name)())


def photo(
    width: int = 640, height: int = 480, *, name: str = "astronaut", seed: int = 0
) -> np.ndarray:
    """An RGB uint8 photograph of ``width`` x ``height`` px with a little seeded grain."""
    src = _source(name)
    if src.ndim == 2:
        src = np.dstack([src] * 3)
    img = cv2.resize(src, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    rng = np.random.default_rng(seed)
    img += rng.integers(-2, 3, size=img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def png(img: np.ndarray) -> bytes:
    """Encode an RGB(A) array (uint8 or uint16) as PNG bytes."""
    code = cv2.COLOR_RGBA2BGRA if img.shape[-1] == 4 else cv2.COLOR_RGB2BGR
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, code))
    assert ok
    return buf.tobytes()


def jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB uint8 array as JPEG bytes."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    assert ok
    return buf.tobytes()


def decode_rgb(data_: bytes) -> np.ndarray:
    """Decode PNG/JPEG bytes to RGB with OpenCV (an independent path from ours)."""
    img = cv2.imdecode(np.frombuffer(data_, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def warp(img: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp ``img`` by the 3x3 ``matrix`` (source -> destination) into ``size`` (w, h)."""
    return cv2.warpPerspective(
        img, matrix, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )


def similarity(
    angle_deg: float, scale: float, center: tuple[float, float], shift=(0.0, 0.0)
) -> np.ndarray:
    """3x3 rotation+scale about ``center`` followed by a shift (x, y)."""
    m = np.eye(3)
    m[:2] = cv2.getRotationMatrix2D(center, angle_deg, scale)
    m[0, 2] += shift[0]
    m[1, 2] += shift[1]
    return m


def paste_patch(img: np.ndarray, rect: tuple[int, int, int, int], *, seed: int = 1) -> np.ndarray:
    """Return a copy of ``img`` with a clearly different textured patch at rect (x, y, w, h)."""
    x, y, w, h = rect
    out = img.copy()
    rng = np.random.default_rng(seed)
    patch = cv2.resize(_source("coffee"), (w, h)).astype(np.int16)
    patch = 255 - patch + rng.integers(-3, 4, size=patch.shape, dtype=np.int16)
    out[y : y + h, x : x + w] = np.clip(patch, 0, 255).astype(np.uint8)
    return out


@cache
def png_bytes(
    width: int = 64, height: int = 48, *, seed: int = 0, name: str = "astronaut"
) -> bytes:
    """A PNG photograph made from scikit-image's samples (seeded grain)."""
    return png(photo(width, height, name=name, seed=seed))


def edited_png(width: int = 64, height: int = 48, *, seed: int = 0) -> bytes:
    """The photo of :func:`png_bytes` with a white square painted on it."""
    img = photo(width, height, seed=seed).copy()
    img[height // 4 : height // 2, width // 4 : width // 2] = 255
    return png(img)


def corrupt_png(width: int = 64, height: int = 48, *, seed: int = 0) -> bytes:
    """A PNG whose header and end are intact but whose pixel data is damaged: it passes the
    header check and fails to decode (``corrupt_image``)."""
    data = bytearray(png_bytes(width, height, seed=seed))
    middle = len(data) // 2
    data[middle : middle + 20] = bytes(20)
    return bytes(data)


def garbled_png(data: bytes, *, seed: int = 0) -> bytes:
    """``data`` (a PNG) with garbage in its pixel data: the header and chunk structure (CRCs
    included) stay valid, so it passes header validation and fails only when decoded."""
    start = data.index(b"IDAT")
    length = struct.unpack(">I", data[start - 4 : start])[0]
    payload = bytearray(data[start + 4 : start + 4 + length])
    rng = np.random.default_rng(seed)
    payload[10:200] = rng.integers(0, 256, 190, dtype=np.uint8).tobytes()
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(payload)) & 0xFFFFFFFF)
    return data[: start + 4] + bytes(payload) + crc + data[start + 8 + length :]


def edited_pair(width: int, height: int, *, seed: int) -> tuple[bytes, bytes]:
    """PNGs of a photo A and of A with one pasted patch (a localised edit)."""
    a = photo(width, height, seed=seed)
    rect = (width // 4 + seed % 7, height // 3, width // 5, height // 5)
    return png(a), png(paste_patch(a, rect, seed=seed))


def noise_png(width: int = 32, height: int = 24, *, seed: int = 0) -> bytes:
    """A PNG of seeded RGB noise (distinct seeds give distinct bytes)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_header_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny, structurally valid PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )
