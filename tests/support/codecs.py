"""Small encoded images of every format for the decoder's tests: a photographic crop, PIL and
OpenCV encoders, hand-made PNG chunks (a header claiming any size), orientation in EXIF or XMP."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import skimage.data
from PIL import Image, PngImagePlugin

__all__ = [
    "crafted_png",
    "encode_cv2",
    "encode_pil",
    "pil_exif",
    "png_chunk",
    "png_with_xmp_orientation",
    "small_photo",
    "small_photo_rgba",
]


def small_photo() -> np.ndarray:
    """A 48x64 (non-square, so rotations change the shape) photographic RGB crop."""
    return np.ascontiguousarray(skimage.data.astronaut()[100:148, 180:244])


def small_photo_rgba() -> np.ndarray:
    """:func:`small_photo` with a seeded random alpha channel (its first 4 rows transparent)."""
    rng = np.random.default_rng(1)
    alpha = rng.integers(0, 256, (48, 64, 1), dtype=np.uint8)
    alpha[:4] = 0  # some fully transparent rows
    return np.concatenate([small_photo(), alpha], axis=2)


def encode_pil(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    """``image`` saved by PIL as ``fmt`` (``"PNG"``, ``"JPEG"``, ...) with ``kwargs``."""
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def encode_cv2(pixels: np.ndarray, ext: str) -> bytes:
    """Encode RGB/RGBA pixels with OpenCV (which expects BGR/BGRA)."""
    code = cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
    ok, buf = cv2.imencode(ext, cv2.cvtColor(pixels, code))
    assert ok
    return buf.tobytes()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC-32."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def crafted_png(width: int, height: int) -> bytes:
    """A syntactically valid PNG whose IHDR claims width x height 8-bit RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\x00\x00\x00")  # one filter byte and one pixel
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_with_xmp_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    """A PNG whose orientation is only in XMP metadata (an iTXt chunk before the image data)."""
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf='
        '"http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        f'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="{orientation}"/>'
        "</rdf:RDF></x:xmpmeta>"
    )
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    return encode_pil(Image.fromarray(pixels), "PNG", pnginfo=info)


def pil_exif(orientation: int) -> Image.Exif:
    """An EXIF block holding only the Orientation tag (1..8, or an invalid value)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif
