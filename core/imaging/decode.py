"""Decode pixels fast, and bring two images to one pixel format.

The header is read and the limits enforced first (``core.imaging.header``), so no pixel is
decoded beyond ``max_pixels``.

Decoding
    PNG, JPEG, WebP, BMP and TIFF are decoded by OpenCV (``cv2.imdecode``), which keeps 16-bit
    samples and alpha; GIF, 8-bit TIFF with alpha (which OpenCV would premultiply) and anything
    OpenCV cannot read are decoded by PIL. The result is RGB, or RGBA with straight (not
    premultiplied) alpha when the file has alpha or a transparency key (palette or grey PNG with
    ``tRNS``, GIF transparency index). Grey and palette images become RGB. PNG and TIFF keep 16
    bits per channel; every other source is 8-bit.

Orientation
    The EXIF orientation read with the header is applied (TIFF's by the decoders), so the pixels
    are as displayed; the result matches ``PIL.ImageOps.exif_transpose``.

Alpha rule (``harmonise``)
    When either image of a pair has alpha, both are compared as *premultiplied* RGBA: each colour
    channel becomes ``round(colour * alpha / max)`` (max = 255 or 65535) and alpha stays as a
    fourth channel; an image without alpha counts as fully opaque. Hence colour hidden under
    fully transparent pixels is zeroed and never counts as a difference, while a pixel whose
    alpha differs is a difference (in the alpha channel, and in colour by the same proportion).
    Two opaque images compare exactly as their RGB would. An 8-bit image paired with a 16-bit
    one is widened exactly (value x 257) before that.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import (
    Image,
)

from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.options import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

try:  # WebP support is optional in PIL builds; OpenCV still decodes WebP without it.
    from PIL import WebPImagePlugin
except ImportError:  # pragma: no cover - depends on the PIL build
    WebPImagePlugin = None  # type: ignore[assignment]

from core.imaging.header import (
    GREY16_MODES,
    ImageHeader,
    ParsedHeader,
    failure_reason,
    parse_header,
    quiet_bomb_warnings,
)

__all__ = ["DecodedImage", "decode", "harmonise"]


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """Decoded pixels and the header they came with.

    Attributes
    ----------
    pixels
        C-contiguous ``HxWx3`` RGB or ``HxWx4`` RGBA (straight alpha) array, ``uint8`` or
        ``uint16``, as displayed (EXIF orientation applied).
    header
        The header, describing exactly these pixels.
    """

    pixels: np.ndarray
    header: ImageHeader

    @property
    def data_range(self) -> int:
        """Largest possible sample value: 255 for ``uint8`` pixels, 65535 for ``uint16``."""
        return 65535 if self.pixels.dtype == np.uint16 else 255


def decode(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Decode an image to RGB or RGBA pixels, after checking its header against the limits.

    Parameters
    ----------
    data
        The encoded file.
    max_bytes
        Largest accepted file size, in bytes.
    max_pixels
        Largest accepted ``width * height``, in pixels; checked before any pixel is decoded.

    Returns
    -------
    DecodedImage
        ``HxWx3`` or ``HxWx4`` ``uint8``/``uint16`` pixels (EXIF orientation applied; grey and
        palette images as RGB; GIF: first frame) and the header describing them.

    Raises
    ------
    ImagingError
        The codes of :func:`read_header`, and ``corrupt_image`` when the pixel data is
        truncated or cannot be decoded.
    """
    parsed = parse_header(data, max_bytes=max_bytes, max_pixels=max_pixels)
    header = parsed.header
    pixels: np.ndarray | None = None
    oriented = False
    # GIF always goes to PIL; so does 8-bit TIFF with alpha, which OpenCV would premultiply.
    use_cv2 = header.format != "gif" and not (
        header.format == "tiff" and header.has_alpha and header.bit_depth == 8
    )
    if use_cv2:
        raw = _cv2_decode(data)
        if raw is not None:
            pixels = _from_cv2(raw, parsed)
            oriented = header.format == "tiff"  # OpenCV applies the TIFF Orientation tag
    if pixels is None:
        pixels = _from_pil(parsed)
        # PIL applies the TIFF Orientation tag while loading, and then deletes the tag.
        oriented = header.format == "tiff" and 274 not in getattr(parsed.image, "tag_v2", {})
    if not oriented:
        pixels = _orient(pixels, header.orientation)
    pixels = np.ascontiguousarray(pixels)
    actual = replace(
        header,
        width=int(pixels.shape[1]),
        height=int(pixels.shape[0]),
        bit_depth=16 if pixels.dtype == np.uint16 else 8,
        has_alpha=pixels.shape[2] == 4,
    )
    return DecodedImage(pixels=pixels, header=header if actual == header else actual)


def harmonise(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Bring two decoded pixel arrays to one channel count and dtype (sizes may differ).

    An 8-bit array paired with a 16-bit one is widened exactly (value x 257). If either has
    alpha, both become premultiplied RGBA (see the module docstring: colour under transparent
    pixels does not count, an alpha difference is a difference; missing alpha is opaque).
    Otherwise the inputs are returned unchanged, without a copy.

    Parameters
    ----------
    a, b
        ``HxWx3`` RGB or ``HxWx4`` RGBA (straight alpha) arrays, ``uint8`` or ``uint16``.

    Returns
    -------
    tuple
        ``(a, b, data_range)`` with the same channel count and dtype; ``data_range`` is 255 for
        ``uint8`` and 65535 for ``uint16``.
    """
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 3 or x.shape[2] not in (3, 4) or x.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"{name} must be HxWx3 or HxWx4 uint8/uint16, got {x.shape} {x.dtype}")
    if a.dtype != b.dtype:
        if a.dtype == np.uint8:
            a = np.multiply(a, 257, dtype=np.uint16)
        else:
            b = np.multiply(b, 257, dtype=np.uint16)
    data_range = 65535 if a.dtype == np.uint16 else 255
    if a.shape[2] == 3 and b.shape[2] == 3:
        return a, b, data_range
    return _premultiplied(a), _premultiplied(b), data_range


def _cv2_decode(data: bytes) -> np.ndarray | None:
    try:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    if raw is None or raw.dtype not in (np.uint8, np.uint16) or raw.size == 0:
        return None
    return raw


def _from_cv2(raw: np.ndarray, parsed: ParsedHeader) -> np.ndarray | None:
    """BGR/BGRA/grey from OpenCV to RGB/RGBA as the header says, or None to use PIL instead."""
    want_alpha = parsed.header.has_alpha
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    if channels == 1:
        grey = raw if raw.ndim == 2 else raw[..., 0]
        if not want_alpha:
            return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
        key = parsed.image.info.get("transparency")
        if parsed.header.format != "png" or not isinstance(key, int):
            return None
        return _grey_with_key(grey, key, parsed.png_bit_depth)
    if channels == 2:  # grey + alpha
        grey, alpha = raw[..., 0], raw[..., 1]
        if not want_alpha:
            return cv2.cvtColor(np.ascontiguousarray(grey), cv2.COLOR_GRAY2RGB)
        return cv2.merge([grey, grey, grey, alpha])
    if channels == 3:
        if want_alpha:
            return None
        # In place: the decoder's buffer is ours, and a copy would double the decode's peak.
        return cv2.cvtColor(raw, cv2.COLOR_BGR2RGB, dst=raw)
    if channels == 4:
        if want_alpha:
            return cv2.cvtColor(raw, cv2.COLOR_BGRA2RGBA, dst=raw)
        return cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB)
    return None


def _grey_with_key(grey: np.ndarray, key: int, bit_depth: int) -> np.ndarray:
    """Grey PNG with a tRNS colour key (OpenCV drops it): RGBA, alpha 0 where grey == key."""
    if 0 < bit_depth < 8:  # libpng scaled 1/2/4-bit samples to 0..255
        key = key * (255 // ((1 << bit_depth) - 1))
    top = 65535 if grey.dtype == np.uint16 else 255
    alpha = np.where(grey == key, 0, top).astype(grey.dtype)
    return cv2.merge([grey, grey, grey, alpha])


def _from_pil(parsed: ParsedHeader) -> np.ndarray:
    image, header = parsed.image, parsed.header
    try:
        with quiet_bomb_warnings():
            image.load()
            mode = image.mode
            if mode in GREY16_MODES or (mode == "I" and header.bit_depth == 16):
                grey = np.asarray(image)
                grey = np.clip(grey, 0, 65535).astype(np.uint16) if mode == "I" else grey
                grey = np.ascontiguousarray(grey, dtype=np.uint16)
                key = image.info.get("transparency")
                if header.has_alpha and isinstance(key, int):
                    return _grey_with_key(grey, key, 16)
                return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
            target = "RGBA" if header.has_alpha else "RGB"
            return np.array(image if mode == target else image.convert(target))
    except Image.DecompressionBombError as exc:
        raise ImagingError(
            ErrorCode.IMAGE_TOO_LARGE, f"{header.format} image too large: {exc}"
        ) from exc
    except Exception as exc:
        raise ImagingError(
            ErrorCode.CORRUPT_IMAGE, f"cannot decode {header.format} pixels: {failure_reason(exc)}"
        ) from exc


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (same result as PIL.ImageOps.exif_transpose)."""
    if orientation == 2:
        return cv2.flip(pixels, 1)
    if orientation == 3:
        return cv2.rotate(pixels, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(pixels, 0)
    if orientation == 5:
        return cv2.transpose(pixels)
    if orientation == 6:
        return cv2.rotate(pixels, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.rotate(cv2.transpose(pixels), cv2.ROTATE_180)
    if orientation == 8:
        return cv2.rotate(pixels, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return pixels


def _premultiplied(x: np.ndarray) -> np.ndarray:
    """RGBA with colour premultiplied by alpha (exactly rounded); RGB gets an opaque alpha."""
    x = np.ascontiguousarray(x)
    if x.shape[2] == 3:
        return cv2.cvtColor(x, cv2.COLOR_RGB2RGBA)  # alpha = 255 or 65535
    alpha = cv2.extractChannel(x, 3)
    if x.dtype == np.uint8:
        # Multiply all four channels by (a, a, a, 255) / 255, which keeps alpha. OpenCV's scaled
        # 8-bit product is exactly round(c * a / 255) (checked for every c and a in the tests)
        # and several times faster than the integer version below.
        factors = cv2.merge([alpha, alpha, alpha, np.full_like(alpha, 255)])
        return cv2.multiply(x, factors, scale=1.0 / 255)
    # round(c * a / 65535) == (t + (t >> 16)) >> 16 with t = c * a + 32768, exact for all 16-bit
    # c and a (checked exhaustively offline; edge values and a random sample in the tests).
    rgb = cv2.cvtColor(x, cv2.COLOR_RGBA2RGB)
    alpha3 = cv2.cvtColor(alpha, cv2.COLOR_GRAY2RGB)
    t = np.multiply(rgb, alpha3, dtype=np.uint32)
    t += 32768
    t += t >> 16
    colour = np.empty_like(rgb)
    np.right_shift(t, 16, out=colour, casting="unsafe")
    out = cv2.cvtColor(colour, cv2.COLOR_RGB2RGBA)
    cv2.insertChannel(alpha, out, 3)
    return out
