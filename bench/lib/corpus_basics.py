"""What every part of the verdict corpus shares: the source size, deterministic seeds, and the
encoders (PNG, JPEG, WebP bytes of RGB arrays) and decoder."""

from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
from PIL import Image

#: Longer side of every source image, in px.
SIDE = 384


def seed(*parts: object) -> int:
    """A deterministic 32-bit seed from ``parts`` (CRC-32 of their ``/``-joined text)."""
    return zlib.crc32("/".join(str(p) for p in parts).encode())


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
