"""Read image headers cheaply: the format from its magic bytes, the size, bit depth, alpha and
EXIF orientation, with the limits enforced and truncated files refused, before any pixel is
decoded.

Formats: PNG, JPEG, WebP, TIFF, BMP and GIF (first frame). Anything else is refused with
``unsupported_format``; a file that looks like one of these but cannot be parsed (bad header,
truncated) with ``corrupt_image``.

Headers
    ``read_header`` recognises the format from its magic bytes and parses only the header (PIL
    opens lazily; no pixel is decoded), then enforces the limits: file size in bytes and
    ``width * height`` in pixels. PIL's own decompression-bomb guard is not used (our limit is
    ``max_pixels``): the PIL plugin classes are called directly, which never run that check.
    It also refuses files whose end is missing, at the cost of a few byte comparisons: a PNG
    must contain its ``IEND`` chunk, a JPEG must contain an end-of-image marker (FFD9) after its
    first scan (bytes after it, such as padding or an appended video, are allowed), and a WebP
    must be as long as its RIFF header says. Other formats are checked when decoding.

Orientation
    The EXIF orientation (1..8, read from the EXIF block or XMP of JPEG, PNG and WebP, or the
    TIFF Orientation tag) is applied, so ``width``/``height`` and pixels are as displayed; the
    result matches ``PIL.ImageOps.exif_transpose``. For PNG only EXIF stored before the image
    data is read (reading a trailing block would mean decoding the image first).
"""

from __future__ import annotations

import io
import mmap
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
)

from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.options import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

try:  # WebP support is optional in PIL builds; OpenCV still decodes WebP without it.
    from PIL import WebPImagePlugin
except ImportError:  # pragma: no cover - depends on the PIL build
    WebPImagePlugin = None  # type: ignore[assignment]


__all__ = [
    "FORMATS",
    "GREY16_MODES",
    "ImageHeader",
    "ParsedHeader",
    "failure_reason",
    "parse_header",
    "quiet_bomb_warnings",
    "read_header",
]

FORMATS = ("png", "jpeg", "webp", "tiff", "bmp", "gif")

_PIL_OPENERS: dict[str, Any] = {
    "png": PngImagePlugin.PngImageFile,
    "jpeg": JpegImagePlugin.JpegImageFile,
    "tiff": TiffImagePlugin.TiffImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
    "gif": GifImagePlugin.GifImageFile,
}
if WebPImagePlugin is not None:
    _PIL_OPENERS["webp"] = WebPImagePlugin.WebPImageFile

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # length 0, type, fixed CRC
_JPEG_EOI = b"\xff\xd9"
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
GREY16_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_EXIF_KEYS = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")
_ORIENTATION_TAG = 0x0112

# Magic bytes of common files we refuse, to name them in the error message.
_KNOWN_OTHER = (
    (b"%PDF", "PDF"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"qoif", "QOI"),
    (b"PK\x03\x04", "ZIP"),
)


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an image file says, read without decoding pixels.

    Attributes
    ----------
    format
        ``"png"``, ``"jpeg"``, ``"webp"``, ``"tiff"``, ``"bmp"`` or ``"gif"``.
    width, height
        Size in pixels as displayed, i.e. after the EXIF orientation.
    bit_depth
        Bits per channel of the decoded pixels: 8 or 16.
    has_alpha
        True when the decoded pixels carry alpha (alpha channel or transparency key).
    orientation
        EXIF orientation 1..8 (1 when absent or invalid).
    """

    format: str
    width: int
    height: int
    bit_depth: int
    has_alpha: bool
    orientation: int


@dataclass(frozen=True)
class ParsedHeader:
    """A parsed header and the lazily opened PIL image it came from (for the decoder)."""

    header: ImageHeader
    image: Image.Image  # lazily opened PIL image (header parsed, no pixels)
    png_bit_depth: int  # bit depth from a PNG's IHDR (0 for other formats)


def read_header(
    data: bytes | mmap.mmap,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageHeader:
    """Parse only the header of an encoded image and enforce the size limits.

    Cheap (tens of microseconds for a normal PNG or JPEG): no pixel is decoded. Also refuses
    PNG, JPEG and WebP files whose end is missing (see the module docstring).

    Parameters
    ----------
    data
        The encoded file, or a memory map of it (a spooled upload: read in place, not copied).
    max_bytes
        Largest accepted file size, in bytes.
    max_pixels
        Largest accepted ``width * height``, in pixels.

    Returns
    -------
    ImageHeader
        Format, displayed size, bit depth (8 or 16), alpha and EXIF orientation.

    Raises
    ------
    ImagingError
        ``empty_file`` (0 bytes), ``image_too_large`` (more than ``max_bytes`` bytes or
        ``max_pixels`` pixels), ``unsupported_format`` (not PNG, JPEG, WebP, TIFF, BMP or GIF,
        or an unsupported sample type such as floating-point TIFF), ``corrupt_image`` (header
        unreadable or file truncated).
    """
    return parse_header(data, max_bytes=max_bytes, max_pixels=max_pixels).header


def parse_header(data: bytes | mmap.mmap, *, max_bytes: int, max_pixels: int) -> ParsedHeader:
    """:func:`read_header`, keeping the opened PIL image for decoding (same checks, same errors)."""
    size = len(data)
    if size == 0:
        raise ImagingError(ErrorCode.EMPTY_FILE, "the file is empty (0 bytes)")
    if size > max_bytes:
        raise ImagingError(
            ErrorCode.IMAGE_TOO_LARGE, f"the file has {size} bytes, more than {max_bytes}"
        )
    fmt = _sniff(data)
    if fmt is None:
        raise ImagingError(ErrorCode.UNSUPPORTED_FORMAT, _unsupported_message(data))
    if fmt == "webp":
        # libwebp allocates its canvas when PIL opens the file: check the size before that.
        quick = _webp_size(data)
        if quick is not None:
            _check_pixels(quick[0], quick[1], max_pixels)
    opener = _PIL_OPENERS.get(fmt)
    if opener is None:  # pragma: no cover - PIL built without WebP
        raise ImagingError(ErrorCode.UNSUPPORTED_FORMAT, f"{fmt} support is not installed")
    try:
        if fmt == "gif":  # GIF frame extents may enlarge the canvas, under PIL's bomb check
            with quiet_bomb_warnings():
                image = opener(_file(data))
        else:
            image = opener(_file(data))
    except Image.DecompressionBombError as exc:
        raise ImagingError(ErrorCode.IMAGE_TOO_LARGE, f"{fmt} image too large: {exc}") from exc
    except Exception as exc:
        raise ImagingError(
            ErrorCode.CORRUPT_IMAGE, f"unreadable {fmt} header: {failure_reason(exc)}"
        ) from exc

    stored_w, stored_h = _stored_size(image, fmt)
    if stored_w <= 0 or stored_h <= 0:
        raise ImagingError(ErrorCode.CORRUPT_IMAGE, f"{fmt} header gives no pixels")
    _check_pixels(stored_w, stored_h, max_pixels)

    png_bit_depth = 0
    if fmt == "png":
        png_bit_depth = data[24]
        bit_depth = 16 if png_bit_depth == 16 else 8
    elif fmt == "tiff":
        bit_depth = _tiff_bit_depth(image)
    else:
        bit_depth = 8
    if image.mode in ("F", "I") and not (fmt == "png" and bit_depth == 16):
        raise ImagingError(
            ErrorCode.UNSUPPORTED_FORMAT, f"{fmt} with 32-bit or floating-point samples"
        )

    _check_complete(data, fmt)

    orientation = _orientation(image, fmt)
    width, height = (stored_h, stored_w) if orientation >= 5 else (stored_w, stored_h)
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    header = ImageHeader(
        format=fmt,
        width=width,
        height=height,
        bit_depth=bit_depth,
        has_alpha=has_alpha,
        orientation=orientation,
    )
    return ParsedHeader(header=header, image=image, png_bit_depth=png_bit_depth)


def _file(data: bytes | mmap.mmap) -> io.BytesIO | mmap.mmap:
    """A file object over ``data`` for PIL: a memory map is read in place (no copy)."""
    if isinstance(data, mmap.mmap):
        data.seek(0)
        return data
    return io.BytesIO(data)


def _sniff(data: bytes | mmap.mmap) -> str | None:
    if data[:8] == _PNG_SIGNATURE:
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    # "BM" alone is too weak (a text file may start with it): require a known DIB header.
    if data[:2] == b"BM" and (
        len(data) < 18 or int.from_bytes(data[14:18], "little") in _BMP_DIB_SIZES
    ):
        return "bmp"
    return None


def _unsupported_message(data: bytes | mmap.mmap) -> str:
    expected = "expected PNG, JPEG, WebP, TIFF, BMP or GIF"
    head = data[:512]
    kind = next((name for magic, name in _KNOWN_OTHER if head.startswith(magic)), None)
    if kind is None and head[4:8] == b"ftyp":
        kind = "HEIF/AVIF"
    if kind is None:
        text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        if b"<svg" in text:
            kind = "SVG"
        elif text.startswith((b"<?xml", b"<!doctype", b"<html")):
            kind = "XML/HTML text"
    described = f" ({kind})" if kind else ""
    return f"unsupported format{described}; {expected}"


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImagingError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"{width}x{height} is {width * height} pixels, more than {max_pixels}",
        )


def _stored_size(image: Image.Image, fmt: str) -> tuple[int, int]:
    """Width and height as stored in the file, before any orientation."""
    if fmt == "tiff":
        # Recent PIL reports a TIFF's size already oriented; the tags are what is stored.
        tags = getattr(image, "tag_v2", {})
        return int(tags.get(256, image.size[0])), int(tags.get(257, image.size[1]))
    return image.size


def _webp_size(data: bytes | mmap.mmap) -> tuple[int, int] | None:
    """Canvas size from the first WebP chunk (VP8X, VP8L or VP8), or None if unreadable."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
        return width, height
    return None


def _tiff_bit_depth(image: Image.Image) -> int:
    tags = getattr(image, "tag_v2", {})
    bits = tags.get(258, 1)
    bits_max = max(bits) if isinstance(bits, tuple) else int(bits)
    formats = tags.get(339, 1)
    formats = formats if isinstance(formats, tuple) else (formats,)
    if bits_max > 16 or any(int(f) != 1 for f in formats):
        raise ImagingError(
            ErrorCode.UNSUPPORTED_FORMAT,
            "tiff with floating-point, signed or more than 16-bit samples",
        )
    return 16 if bits_max > 8 else 8


def _check_complete(data: bytes | mmap.mmap, fmt: str) -> None:
    """Refuse PNG/JPEG/WebP files whose end is missing (a truncated upload)."""
    if fmt == "png":
        # rfind scans from the end: instant when IEND is last, as it nearly always is.
        if data.rfind(_PNG_IEND) < 0:
            raise ImagingError(ErrorCode.CORRUPT_IMAGE, "truncated png: no IEND chunk")
    elif fmt == "jpeg":
        if data[-2:] == _JPEG_EOI:
            return
        scan = _jpeg_scan_start(data)
        # FFD9 cannot occur inside entropy-coded data, so one after the first scan's start
        # is the end of the image (what follows it, e.g. an appended video, is allowed).
        if scan < 0 or data.find(_JPEG_EOI, scan) < 0:
            raise ImagingError(ErrorCode.CORRUPT_IMAGE, "truncated jpeg: no end-of-image marker")
    elif fmt == "webp":
        declared = int.from_bytes(data[4:8], "little") + 8
        if len(data) < declared:
            raise ImagingError(
                ErrorCode.CORRUPT_IMAGE,
                f"truncated webp: {len(data)} bytes, the header declares {declared}",
            )


def _jpeg_scan_start(data: bytes | mmap.mmap) -> int:
    """Offset of the first entropy-coded byte after the first SOS segment, or -1."""
    pos, size = 2, len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return -1
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker == 0xD9:  # end of image before any scan
            return -1
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            return -1
        if marker == 0xDA:
            return pos + 2 + length
        pos += 2 + length
    return -1


def _orientation(image: Image.Image, fmt: str) -> int:
    try:
        if fmt == "tiff":
            value = getattr(image, "tag_v2", {}).get(274, 1)
        elif any(key in image.info for key in _EXIF_KEYS):
            # The base-class method reads EXIF/XMP from the header only; PNG's override would
            # decode the image to look for a trailing eXIf chunk.
            value = Image.Image.getexif(image).get(_ORIENTATION_TAG, 1)
        else:
            return 1
        orientation = int(value)
    except Exception:
        return 1  # unreadable metadata does not make the image unreadable
    return orientation if 1 <= orientation <= 8 else 1


def failure_reason(exc: BaseException) -> str:
    """The first line of a decoder's error, at most 200 characters (for ``corrupt_image``)."""
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


@contextmanager
def quiet_bomb_warnings() -> Iterator[None]:
    """Silence PIL's DecompressionBombWarning: our own ``max_pixels`` check already ran."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield
