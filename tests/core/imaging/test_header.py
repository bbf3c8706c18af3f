"""Tests of core.imaging.header: every error code from a real bad file (refused by the header
or, for formats checked when decoding, by ``decode``), the byte and pixel limits before any
allocation, and headers read without decoding a pixel.
"""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageFile

from core.imaging import decode as decode_module
from core.imaging import header as header_module
from core.imaging.decode import decode
from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.header import ImageHeader, read_header
from tests.support.codecs import (
    crafted_png,
    encode_cv2,
    encode_pil,
    pil_exif,
    png_with_xmp_orientation,
    small_photo,
    small_photo_rgba,
)


def _error_code(data: bytes, fn: object = decode, **kwargs: int) -> ErrorCode:
    with pytest.raises(ImagingError) as info:
        fn(data, **kwargs)  # type: ignore[operator]
    return info.value.code


# ---------------------------------------------------------------------------------------------
# Error codes, each from a real bad file


@pytest.mark.parametrize("fn", [read_header, decode])
def test_zero_bytes_is_empty_file(fn: object) -> None:
    assert _error_code(b"", fn) == ErrorCode.EMPTY_FILE


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"just some text\nnot an image\n", None),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>\n', "SVG"),
        (b"BMW and BMX are not bitmaps, even though they start with BM", None),
        (b"GIF88a is not a GIF version", None),
    ],
)
def test_foreign_files_are_unsupported_format(data: bytes, named: str | None) -> None:
    for fn in (read_header, decode):
        with pytest.raises(ImagingError) as info:
            fn(data)
        assert info.value.code == ErrorCode.UNSUPPORTED_FORMAT
        if named:
            assert named in info.value.message


def test_truncated_png_is_corrupt() -> None:
    png = encode_cv2(small_photo(), ".png")
    for cut in (len(png) // 2, len(png) - 1, 20):
        truncated = png[:cut]
        assert _error_code(truncated, read_header) == ErrorCode.CORRUPT_IMAGE
        assert _error_code(truncated, decode) == ErrorCode.CORRUPT_IMAGE


def test_truncated_jpeg_is_corrupt() -> None:
    jpeg = encode_cv2(small_photo(), ".jpg")
    for cut in (len(jpeg) // 2, len(jpeg) - 1):
        truncated = jpeg[:cut]
        assert _error_code(truncated, read_header) == ErrorCode.CORRUPT_IMAGE
        assert _error_code(truncated, decode) == ErrorCode.CORRUPT_IMAGE


def test_truncated_jpeg_with_eoi_bytes_in_a_header_segment_is_corrupt() -> None:
    # An FFD9 inside a comment (like an EXIF thumbnail's end marker) must not pass for the end
    # of the image: only an FFD9 after the first scan counts.
    jpeg = encode_pil(Image.fromarray(small_photo()), "JPEG", comment=b"thumb \xff\xd9 end")
    assert b"thumb \xff\xd9" in jpeg
    truncated = jpeg[: len(jpeg) * 2 // 3]
    assert _error_code(truncated, read_header) == ErrorCode.CORRUPT_IMAGE


def test_jpeg_with_trailing_bytes_after_eoi_decodes() -> None:
    jpeg = encode_cv2(small_photo(), ".jpg")
    reference = decode(jpeg).pixels
    rng = np.random.default_rng(2)
    for trailer in (bytes(16), rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()):
        assert np.array_equal(decode(jpeg + trailer).pixels, reference)


def test_truncated_webp_is_corrupt() -> None:
    webp = encode_pil(Image.fromarray(small_photo()), "WEBP", lossless=True)
    truncated = webp[: len(webp) - 10]
    assert _error_code(truncated, read_header) == ErrorCode.CORRUPT_IMAGE
    assert _error_code(truncated, decode) == ErrorCode.CORRUPT_IMAGE


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "GIF"])
def test_truncated_tiff_bmp_gif_are_corrupt_when_decoded(fmt: str) -> None:
    image = Image.fromarray(small_photo())
    data = encode_pil(image.quantize(64) if fmt == "GIF" else image, fmt)
    assert _error_code(data[: len(data) * 2 // 3], decode) == ErrorCode.CORRUPT_IMAGE


def test_png_with_corrupt_image_data_is_corrupt() -> None:
    png = bytearray(encode_cv2(small_photo(), ".png"))
    middle = len(png) // 2
    png[middle : middle + 64] = bytes(64)  # IEND intact, IDAT damaged
    read_header(bytes(png))  # the header itself is fine
    assert _error_code(bytes(png), decode) == ErrorCode.CORRUPT_IMAGE


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,  # PNG signature, no IHDR
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20,  # JPEG start, garbage after
        b"II*\x00" + b"\xff" * 20,  # TIFF signature, IFD offset out of range
        b"GIF89a\x01",  # GIF signature, header cut
    ],
)
def test_unparseable_headers_are_corrupt(data: bytes) -> None:
    assert _error_code(data, read_header) == ErrorCode.CORRUPT_IMAGE


def test_huge_png_header_is_refused_before_any_allocation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    huge = crafted_png(100_000, 100_000)
    assert len(huge) < 100
    assert _error_code(huge, read_header) == ErrorCode.IMAGE_TOO_LARGE

    def no_pixel_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decode reached the pixel decoder")

    monkeypatch.setattr(decode_module.cv2, "imdecode", no_pixel_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_pixel_decoding)
    tracemalloc.start()
    try:
        assert _error_code(huge, decode) == ErrorCode.IMAGE_TOO_LARGE
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # 10^10 RGB pixels would be 30 GB


def test_pixel_limit_is_ours_not_pils() -> None:
    # PIL warns above ~89.5 M pixels and refuses above ~179 M; our limit is the argument, and
    # warnings are errors in this test suite.
    header = read_header(crafted_png(10_000, 9_000))  # 90 M pixels, default limit 100 M
    assert (header.width, header.height) == (10_000, 9_000)
    header = read_header(crafted_png(100_000, 100_000), max_pixels=10**10)
    assert (header.width, header.height) == (100_000, 100_000)


def test_pixel_limit_boundary() -> None:
    png = encode_cv2(small_photo(), ".png")
    assert read_header(png, max_pixels=48 * 64).width == 64
    assert _error_code(png, read_header, max_pixels=48 * 64 - 1) == ErrorCode.IMAGE_TOO_LARGE
    assert _error_code(png, decode, max_pixels=48 * 64 - 1) == ErrorCode.IMAGE_TOO_LARGE


def test_byte_limit() -> None:
    png = encode_cv2(small_photo(), ".png")
    assert read_header(png, max_bytes=len(png)).format == "png"
    assert _error_code(png, read_header, max_bytes=len(png) - 1) == ErrorCode.IMAGE_TOO_LARGE
    assert _error_code(png, decode, max_bytes=len(png) - 1) == ErrorCode.IMAGE_TOO_LARGE


def test_float_tiff_is_unsupported() -> None:
    data = encode_pil(Image.fromarray(small_photo()[..., 0].astype(np.float32)), "TIFF")
    assert _error_code(data, read_header) == ErrorCode.UNSUPPORTED_FORMAT


# ---------------------------------------------------------------------------------------------
# Headers


def test_read_header_never_decodes_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    rgb = small_photo()
    files = {
        "png": encode_pil(Image.fromarray(rgb), "PNG", exif=pil_exif(6)),
        "png+xmp": png_with_xmp_orientation(rgb, 6),
        "jpeg": encode_pil(Image.fromarray(rgb), "JPEG", exif=pil_exif(6)),
        "webp": encode_pil(Image.fromarray(rgb), "WEBP", exif=pil_exif(6)),
        "tiff": encode_pil(Image.fromarray(rgb), "TIFF", tiffinfo={274: 6}),
        "bmp": encode_pil(Image.fromarray(rgb), "BMP"),
        "gif": encode_pil(Image.fromarray(rgb).quantize(64), "GIF"),
    }

    def no_pixel_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("read_header decoded pixels")

    monkeypatch.setattr(decode_module.cv2, "imdecode", no_pixel_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_pixel_decoding)
    for name, data in files.items():
        header = read_header(data)
        fmt = name.split("+")[0]
        rotated = fmt not in ("bmp", "gif")
        assert header == ImageHeader(
            format=fmt,
            width=48 if rotated else 64,
            height=64 if rotated else 48,
            bit_depth=8,
            has_alpha=False,
            orientation=6 if rotated else 1,
        )


def test_read_header_decodes_no_pixel(monkeypatch: pytest.MonkeyPatch) -> None:
    """read_header parses headers only: any pixel decoding (PIL's load, OpenCV's imdecode)
    would raise here."""
    img = cv2.resize(skimage.data.retina(), (1920, 1080), interpolation=cv2.INTER_AREA)
    files = {ext: encode_cv2(img, ext) for ext in (".png", ".jpg", ".webp")}

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)
    monkeypatch.setattr(decode_module.cv2, "imdecode", refuse)
    for ext, data in files.items():
        header = read_header(data)
        assert (header.width, header.height) == (1920, 1080), ext


def test_webp_header_size_matches_pil() -> None:
    # The early WebP size check reads VP8 / VP8L / VP8X headers itself.
    rgb, rgba = small_photo(), small_photo_rgba()
    for data in (
        encode_pil(Image.fromarray(rgb), "WEBP", quality=80),  # VP8
        encode_pil(Image.fromarray(rgb), "WEBP", lossless=True),  # VP8L
        encode_pil(Image.fromarray(rgba), "WEBP", quality=80),  # VP8X (alpha)
    ):
        assert header_module._webp_size(data) == (64, 48)
        assert _error_code(data, read_header, max_pixels=64 * 48 - 1) == (ErrorCode.IMAGE_TOO_LARGE)


def test_webp_size_is_checked_before_pil_opens_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # libwebp allocates the whole canvas when PIL opens a WebP: refuse from the bytes first.
    data = encode_pil(Image.fromarray(small_photo_rgba()), "WEBP", quality=80)

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("PIL opened an over-limit WebP")

    monkeypatch.setitem(header_module._PIL_OPENERS, "webp", no_open)
    assert _error_code(data, read_header, max_pixels=100) == ErrorCode.IMAGE_TOO_LARGE
