"""Preview images on A's pixel grid, for a viewer: A as decoded, and B in A's frame.

A viewer overlays A, B and the heatmap pixel for pixel, so every preview has A's size. B's
preview is B warped into A's frame with the homography the comparison found (the same
``warp_into`` the engine compares with) when alignment was applied, transparent outside the
compared overlap; otherwise B as decoded (it already has A's size). Pixels are shown as
decoded (EXIF orientation applied, straight alpha), 16-bit images reduced to 8 bits
(``v // 257`` rounded), written as PNG. Pure: bytes and arrays in, PNG bytes out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.imaging.align.warp import warp_into
from core.imaging.decode import decode
from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.options import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

__all__ = ["Previews", "a_pixels", "b_in_a_frame", "render_previews", "to_png"]

#: PNG compression level of the previews (1: fastest; they are written on every comparison).
PNG_COMPRESSION = 1


@dataclass(frozen=True)
class Previews:
    """PNG bytes of A and of B in A's frame, both ``width x height`` of A."""

    a_png: bytes
    b_png: bytes


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def to_png(pixels: np.ndarray) -> bytes:
    """Encode ``HxWx3`` RGB or ``HxWx4`` RGBA ``uint8``/``uint16`` pixels as an 8-bit PNG.

    Raises
    ------
    ImagingError
        ``UNSUPPORTED_FORMAT`` if the array is not RGB/RGBA.
    """
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ImagingError(ErrorCode.UNSUPPORTED_FORMAT, f"cannot encode pixels {pixels.shape}")
    rgb = _to_8bit(pixels)
    code = cv2.COLOR_RGB2BGR if rgb.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
    ok, encoded = cv2.imencode(
        ".png", cv2.cvtColor(rgb, code), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]
    )
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB(A) array
        raise ImagingError(ErrorCode.UNSUPPORTED_FORMAT, "PNG encoding failed")
    return encoded.tobytes()


def a_pixels(
    a: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """A as decoded, 8 bits per channel (``HxWx3`` or ``HxWx4`` ``uint8``).

    Raises
    ------
    ImagingError
        The decoder's codes.
    """
    return _to_8bit(decode(a, max_bytes=max_bytes, max_pixels=max_pixels).pixels)


def b_in_a_frame(
    b: bytes,
    homography: list[list[float]] | np.ndarray | None,
    size: tuple[int, int],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """B on A's grid, 8 bits per channel: warped by ``homography`` (RGBA, alpha 0 where B does
    not cover A), or as decoded when ``homography`` is None.

    Parameters
    ----------
    size
        A's ``(height, width)`` in pixels.

    Raises
    ------
    ImagingError
        The decoder's codes; ``size_mismatch`` when B is unwarped and not A's size.
    """
    height, width = size
    image_b = decode(b, max_bytes=max_bytes, max_pixels=max_pixels).pixels
    if homography is None:
        if image_b.shape[:2] != (height, width):
            raise ImagingError(
                ErrorCode.SIZE_MISMATCH,
                f"B is {image_b.shape[1]}x{image_b.shape[0]}, A {width}x{height}, and unaligned",
            )
        return _to_8bit(image_b)
    warped, valid = warp_into(image_b, np.asarray(homography, dtype=np.float64), (height, width))
    del image_b
    warped = _to_8bit(warped)
    if warped.shape[2] == 3:
        alpha = np.full((height, width, 1), 255, dtype=np.uint8)
        warped = np.concatenate([warped, alpha], axis=2)
    warped[..., 3][~valid] = 0
    return warped


def render_previews(
    a: bytes,
    b: bytes,
    homography: list[list[float]] | np.ndarray | None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Previews:
    """Render the previews of a compared pair.

    Parameters
    ----------
    a, b
        The encoded images, as compared.
    homography
        The applied alignment's 3x3 matrix mapping B's points to A's (``alignment.homography``
        of the result when ``alignment.applied``), or None when B was compared unwarped.
    max_bytes, max_pixels
        Decoding limits (those the comparison ran with).

    Returns
    -------
    Previews
        ``a_png``: A as decoded. ``b_png``: B warped into A's frame (RGBA, alpha 0 where B does
        not cover A), or B as decoded when ``homography`` is None.

    Raises
    ------
    ImagingError
        The decoder's codes; ``size_mismatch`` when B is unwarped and not A's size.
    """
    image_a = a_pixels(a, max_bytes=max_bytes, max_pixels=max_pixels)
    a_png = to_png(image_a)
    size = image_a.shape[:2]
    del image_a
    image_b = b_in_a_frame(b, homography, size, max_bytes=max_bytes, max_pixels=max_pixels)
    return Previews(a_png=a_png, b_png=to_png(image_b))
