"""Tests of core.imaging.decode: header limits, every error code from a real bad file, round
trips for every format, EXIF orientation, and the alpha rule of ``harmonise``.

References are independent of the code under test: the source arrays themselves for lossless
formats, PIL (``Image.convert``, ``ImageOps.exif_transpose``) for palette/transparency and
orientation, and plain numpy float arithmetic for premultiplication.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageFile, ImageOps, PngImagePlugin

from core.imaging import decode as decode_module
from core.imaging import header as header_module
from core.imaging.decode import DecodedImage, decode, harmonise
from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.header import ImageHeader, read_header

# ---------------------------------------------------------------------------------------------
# Helpers


def _rgb() -> np.ndarray:
    """A 48x64 (non-square, so rotations change the shape) photographic RGB crop."""
    return np.ascontiguousarray(skimage.data.astronaut()[100:148, 180:244])


def _rgba() -> np.ndarray:
    rng = np.random.default_rng(1)
    alpha = rng.integers(0, 256, (48, 64, 1), dtype=np.uint8)
    alpha[:4] = 0  # some fully transparent rows
    return np.concatenate([_rgb(), alpha], axis=2)


def _encode_pil(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _encode_cv2(pixels: np.ndarray, ext: str) -> bytes:
    """Encode RGB/RGBA pixels with OpenCV (which expects BGR/BGRA)."""
    code = cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
    ok, buf = cv2.imencode(ext, cv2.cvtColor(pixels, code))
    assert ok
    return buf.tobytes()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _crafted_png(width: int, height: int) -> bytes:
    """A syntactically valid PNG whose IHDR claims width x height 8-bit RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\x00\x00\x00")  # one filter byte and one pixel
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _error_code(data: bytes, fn: object = decode, **kwargs: int) -> ErrorCode:
    with pytest.raises(ImagingError) as info:
        fn(data, **kwargs)  # type: ignore[operator]
    return info.value.code


def _check_invariants(image: DecodedImage) -> None:
    pixels, header = image.pixels, image.header
    assert pixels.flags["C_CONTIGUOUS"]
    assert pixels.ndim == 3 and pixels.shape[2] == (4 if header.has_alpha else 3)
    assert pixels.shape[:2] == (header.height, header.width)
    assert pixels.dtype == (np.uint16 if header.bit_depth == 16 else np.uint8)
    assert image.data_range == (65535 if header.bit_depth == 16 else 255)


def _png_with_xmp_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    """A PNG whose orientation is only in XMP metadata (an iTXt chunk before the image data)."""
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf='
        '"http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        f'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="{orientation}"/>'
        "</rdf:RDF></x:xmpmeta>"
    )
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    return _encode_pil(Image.fromarray(pixels), "PNG", pnginfo=info)


def _pil_exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


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
    png = _encode_cv2(_rgb(), ".png")
    for cut in (len(png) // 2, len(png) - 1, 20):
        truncated = png[:cut]
        assert _error_code(truncated, read_header) == ErrorCode.CORRUPT_IMAGE
        assert _error_code(truncated, decode) == ErrorCode.CORRUPT_IMAGE


def test_truncated_jpeg_is_corrupt() -> None:
    jpeg = _encode_cv2(_rgb(), ".jpg")
    for cut in (len(jpeg) // 2, len(jpeg) - 1):
        truncated = jpeg[:cut]
        assert _error_code(truncated, read_header) == ErrorCode.CORRUPT_IMAGE
        assert _error_code(truncated, decode) == ErrorCode.CORRUPT_IMAGE


def test_truncated_jpeg_with_eoi_bytes_in_a_header_segment_is_corrupt() -> None:
    # An FFD9 inside a comment (like an EXIF thumbnail's end marker) must not pass for the end
    # of the image: only an FFD9 after the first scan counts.
    jpeg = _encode_pil(Image.fromarray(_rgb()), "JPEG", comment=b"thumb \xff\xd9 end")
    assert b"thumb \xff\xd9" in jpeg
    truncated = jpeg[: len(jpeg) * 2 // 3]
    assert _error_code(truncated, read_header) == ErrorCode.CORRUPT_IMAGE


def test_jpeg_with_trailing_bytes_after_eoi_decodes() -> None:
    jpeg = _encode_cv2(_rgb(), ".jpg")
    reference = decode(jpeg).pixels
    rng = np.random.default_rng(2)
    for trailer in (bytes(16), rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()):
        assert np.array_equal(decode(jpeg + trailer).pixels, reference)


def test_truncated_webp_is_corrupt() -> None:
    webp = _encode_pil(Image.fromarray(_rgb()), "WEBP", lossless=True)
    truncated = webp[: len(webp) - 10]
    assert _error_code(truncated, read_header) == ErrorCode.CORRUPT_IMAGE
    assert _error_code(truncated, decode) == ErrorCode.CORRUPT_IMAGE


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "GIF"])
def test_truncated_tiff_bmp_gif_are_corrupt_when_decoded(fmt: str) -> None:
    image = Image.fromarray(_rgb())
    data = _encode_pil(image.quantize(64) if fmt == "GIF" else image, fmt)
    assert _error_code(data[: len(data) * 2 // 3], decode) == ErrorCode.CORRUPT_IMAGE


def test_png_with_corrupt_image_data_is_corrupt() -> None:
    png = bytearray(_encode_cv2(_rgb(), ".png"))
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
    huge = _crafted_png(100_000, 100_000)
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
    header = read_header(_crafted_png(10_000, 9_000))  # 90 M pixels, default limit 100 M
    assert (header.width, header.height) == (10_000, 9_000)
    header = read_header(_crafted_png(100_000, 100_000), max_pixels=10**10)
    assert (header.width, header.height) == (100_000, 100_000)


def test_pixel_limit_boundary() -> None:
    png = _encode_cv2(_rgb(), ".png")
    assert read_header(png, max_pixels=48 * 64).width == 64
    assert _error_code(png, read_header, max_pixels=48 * 64 - 1) == ErrorCode.IMAGE_TOO_LARGE
    assert _error_code(png, decode, max_pixels=48 * 64 - 1) == ErrorCode.IMAGE_TOO_LARGE


def test_byte_limit() -> None:
    png = _encode_cv2(_rgb(), ".png")
    assert read_header(png, max_bytes=len(png)).format == "png"
    assert _error_code(png, read_header, max_bytes=len(png) - 1) == ErrorCode.IMAGE_TOO_LARGE
    assert _error_code(png, decode, max_bytes=len(png) - 1) == ErrorCode.IMAGE_TOO_LARGE


def test_float_tiff_is_unsupported() -> None:
    data = _encode_pil(Image.fromarray(_rgb()[..., 0].astype(np.float32)), "TIFF")
    assert _error_code(data, read_header) == ErrorCode.UNSUPPORTED_FORMAT


# ---------------------------------------------------------------------------------------------
# Headers


def test_read_header_never_decodes_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    rgb = _rgb()
    files = {
        "png": _encode_pil(Image.fromarray(rgb), "PNG", exif=_pil_exif(6)),
        "png+xmp": _png_with_xmp_orientation(rgb, 6),
        "jpeg": _encode_pil(Image.fromarray(rgb), "JPEG", exif=_pil_exif(6)),
        "webp": _encode_pil(Image.fromarray(rgb), "WEBP", exif=_pil_exif(6)),
        "tiff": _encode_pil(Image.fromarray(rgb), "TIFF", tiffinfo={274: 6}),
        "bmp": _encode_pil(Image.fromarray(rgb), "BMP"),
        "gif": _encode_pil(Image.fromarray(rgb).quantize(64), "GIF"),
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
    files = {ext: _encode_cv2(img, ext) for ext in (".png", ".jpg", ".webp")}

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)
    monkeypatch.setattr(decode_module.cv2, "imdecode", refuse)
    for ext, data in files.items():
        header = read_header(data)
        assert (header.width, header.height) == (1920, 1080), ext


# ---------------------------------------------------------------------------------------------
# Round trips


def test_png_rgb_8bit() -> None:
    rgb = _rgb()
    image = decode(_encode_cv2(rgb, ".png"))
    _check_invariants(image)
    assert image.header == ImageHeader("png", 64, 48, 8, False, 1)
    assert np.array_equal(image.pixels, rgb)


def test_png_rgba_8bit() -> None:
    rgba = _rgba()
    image = decode(_encode_pil(Image.fromarray(rgba), "PNG"))
    _check_invariants(image)
    assert image.header.has_alpha
    assert np.array_equal(image.pixels, rgba)  # straight alpha, colour kept under alpha 0


def test_png_grey_becomes_rgb() -> None:
    grey = _rgb()[..., 1].copy()
    image = decode(_encode_pil(Image.fromarray(grey), "PNG"))
    _check_invariants(image)
    assert np.array_equal(image.pixels, np.dstack([grey, grey, grey]))


def test_png_1bit_becomes_0_or_255() -> None:
    bits = _rgb()[..., 0] > 128
    image = decode(_encode_pil(Image.fromarray(bits), "PNG"))
    expected = np.where(bits, 255, 0).astype(np.uint8)
    assert np.array_equal(image.pixels, np.dstack([expected] * 3))


def test_png_palette_becomes_rgb() -> None:
    palette = Image.fromarray(_rgb()).quantize(32)
    image = decode(_encode_pil(palette, "PNG"))
    _check_invariants(image)
    assert not image.header.has_alpha
    assert np.array_equal(image.pixels, np.asarray(palette.convert("RGB")))


def test_png_palette_with_transparency_becomes_rgba() -> None:
    palette = Image.fromarray(_rgb()).quantize(32)
    data = _encode_pil(palette, "PNG", transparency=5)
    image = decode(data)
    _check_invariants(image)
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))  # PIL's reading
    assert np.array_equal(image.pixels, reference)
    assert (image.pixels[..., 3] == 0).any() and (image.pixels[..., 3] == 255).any()


def test_png_grey_with_transparency_key_becomes_rgba() -> None:
    grey = _rgb()[..., 1].copy()
    key = int(grey[10, 10])
    data = _encode_pil(Image.fromarray(grey), "PNG", transparency=key)
    image = decode(data)
    _check_invariants(image)
    assert np.array_equal(image.pixels, np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")))
    assert np.array_equal(image.pixels[..., 3] == 0, grey == key)


def test_png_16bit_grey_with_transparency_key() -> None:
    grey16 = np.random.default_rng(3).integers(0, 65536, (48, 64), dtype=np.uint16)
    key = int(grey16[5, 7])
    image = decode(_encode_pil(Image.fromarray(grey16), "PNG", transparency=key))
    _check_invariants(image)
    assert image.header.bit_depth == 16
    assert np.array_equal(image.pixels[..., :3], np.dstack([grey16] * 3))
    assert np.array_equal(image.pixels[..., 3], np.where(grey16 == key, 0, 65535))


@pytest.mark.parametrize("channels", [3, 4])
def test_png_16bit_keeps_values_exactly(channels: int) -> None:
    pixels = np.random.default_rng(4).integers(0, 65536, (48, 64, channels), dtype=np.uint16)
    image = decode(_encode_cv2(pixels, ".png"))
    _check_invariants(image)
    assert image.header.bit_depth == 16 and image.data_range == 65535
    assert np.array_equal(image.pixels, pixels)


def test_png_16bit_grey() -> None:
    grey16 = np.random.default_rng(5).integers(0, 65536, (48, 64), dtype=np.uint16)
    image = decode(_encode_pil(Image.fromarray(grey16), "PNG"))
    _check_invariants(image)
    assert np.array_equal(image.pixels, np.dstack([grey16] * 3))


def test_jpeg_is_close() -> None:
    rgb = _rgb()
    data = _encode_cv2(rgb, ".jpg")
    image = decode(data)
    _check_invariants(image)
    assert image.header == ImageHeader("jpeg", 64, 48, 8, False, 1)
    error = np.abs(image.pixels.astype(int) - rgb)
    assert error.mean() < 4
    pil_pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # other decoder
    assert np.abs(image.pixels.astype(int) - pil_pixels).max() <= 3


def test_jpeg_grey_becomes_rgb() -> None:
    grey = _rgb()[..., 1].copy()
    image = decode(_encode_pil(Image.fromarray(grey), "JPEG", quality=95))
    _check_invariants(image)
    assert np.array_equal(image.pixels[..., 0], image.pixels[..., 2])
    assert np.abs(image.pixels[..., 0].astype(int) - grey).mean() < 3


@pytest.mark.parametrize("alpha", [False, True])
def test_webp_lossless_is_exact(alpha: bool) -> None:
    pixels = _rgba() if alpha else _rgb()
    image = decode(_encode_pil(Image.fromarray(pixels), "WEBP", lossless=True, exact=True))
    _check_invariants(image)
    assert image.header.format == "webp" and image.header.has_alpha == alpha
    assert np.array_equal(image.pixels, pixels)


def test_webp_lossy_is_close() -> None:
    rgb = _rgb()
    image = decode(_encode_pil(Image.fromarray(rgb), "WEBP", quality=90))
    _check_invariants(image)
    assert np.abs(image.pixels.astype(int) - rgb).mean() < 6


def test_webp_header_size_matches_pil() -> None:
    # The early WebP size check reads VP8 / VP8L / VP8X headers itself.
    rgb, rgba = _rgb(), _rgba()
    for data in (
        _encode_pil(Image.fromarray(rgb), "WEBP", quality=80),  # VP8
        _encode_pil(Image.fromarray(rgb), "WEBP", lossless=True),  # VP8L
        _encode_pil(Image.fromarray(rgba), "WEBP", quality=80),  # VP8X (alpha)
    ):
        assert header_module._webp_size(data) == (64, 48)
        assert _error_code(data, read_header, max_pixels=64 * 48 - 1) == (ErrorCode.IMAGE_TOO_LARGE)


def test_webp_size_is_checked_before_pil_opens_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # libwebp allocates the whole canvas when PIL opens a WebP: refuse from the bytes first.
    data = _encode_pil(Image.fromarray(_rgba()), "WEBP", quality=80)

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("PIL opened an over-limit WebP")

    monkeypatch.setitem(header_module._PIL_OPENERS, "webp", no_open)
    assert _error_code(data, read_header, max_pixels=100) == ErrorCode.IMAGE_TOO_LARGE


def test_tiff_8bit_rgb_and_16bit() -> None:
    rgb = _rgb()
    image = decode(_encode_pil(Image.fromarray(rgb), "TIFF", compression="tiff_lzw"))
    _check_invariants(image)
    assert image.header.format == "tiff"
    assert np.array_equal(image.pixels, rgb)
    rgb16 = np.random.default_rng(6).integers(0, 65536, (48, 64, 3), dtype=np.uint16)
    image16 = decode(_encode_cv2(rgb16, ".tiff"))
    _check_invariants(image16)
    assert image16.header.bit_depth == 16
    assert np.array_equal(image16.pixels, rgb16)


def test_tiff_rgba_keeps_straight_alpha() -> None:
    # OpenCV would return premultiplied colour for this file; we must not.
    rgba = _rgba()
    image = decode(_encode_pil(Image.fromarray(rgba), "TIFF"))
    _check_invariants(image)
    assert np.array_equal(image.pixels, rgba)


def test_tiff_grey_alpha_becomes_rgba() -> None:
    rgba = _rgba()
    grey_alpha = Image.merge("LA", [Image.fromarray(rgba[..., 0]), Image.fromarray(rgba[..., 3])])
    image = decode(_encode_pil(grey_alpha, "TIFF"))
    _check_invariants(image)
    expected = np.dstack([rgba[..., 0]] * 3 + [rgba[..., 3]])
    assert np.array_equal(image.pixels, expected)


@pytest.mark.parametrize("alpha", [False, True])
def test_bmp(alpha: bool) -> None:
    pixels = _rgba() if alpha else _rgb()
    image = decode(_encode_cv2(pixels, ".bmp"))  # OpenCV writes 32-bit BMP with alpha mask
    _check_invariants(image)
    assert image.header.format == "bmp" and image.header.has_alpha == alpha
    assert np.array_equal(image.pixels, pixels)


def test_gif_first_frame_of_animation() -> None:
    rng = np.random.default_rng(7)
    frames = [Image.fromarray(_rgb()).quantize(64)] + [
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).quantize(64)
        for _ in range(2)
    ]
    data = _encode_pil(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    image = decode(data)
    _check_invariants(image)
    assert image.header == ImageHeader("gif", 64, 48, 8, False, 1)
    first = np.asarray(frames[0].convert("RGB"))  # the source frame: GIF is lossless here
    assert np.array_equal(image.pixels, first)
    assert not np.array_equal(image.pixels, np.asarray(frames[1].convert("RGB")))


def test_gif_with_transparency_becomes_rgba() -> None:
    palette = Image.fromarray(_rgb()).quantize(64)
    image = decode(_encode_pil(palette, "GIF", transparency=3))
    _check_invariants(image)
    transparent = np.asarray(palette) == 3
    assert transparent.any()
    assert np.array_equal(image.pixels[..., 3] == 0, transparent)
    assert np.array_equal(image.pixels[..., :3], np.asarray(palette.convert("RGB")))


# ---------------------------------------------------------------------------------------------
# EXIF orientation


def _transposed_by_pil(data: bytes) -> np.ndarray:
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))


@pytest.mark.parametrize("orientation", [6, 8])
def test_jpeg_exif_orientation(orientation: int) -> None:
    data = _encode_pil(Image.fromarray(_rgb()), "JPEG", quality=95, exif=_pil_exif(orientation))
    image = decode(data)
    _check_invariants(image)
    assert image.header.orientation == orientation
    assert (image.header.width, image.header.height) == (48, 64)
    reference = _transposed_by_pil(data).astype(int)
    assert image.pixels.shape == reference.shape
    assert np.abs(image.pixels - reference).mean() < 1.5  # two JPEG decoders
    wrong_way = np.rot90(reference, 2)  # the other rotation direction
    assert np.abs(image.pixels - wrong_way).mean() > 20


@pytest.mark.parametrize("orientation", range(1, 9))
def test_png_exif_orientation_matches_pil(orientation: int) -> None:
    data = _encode_pil(Image.fromarray(_rgba()), "PNG", exif=_pil_exif(orientation))
    image = decode(data)
    _check_invariants(image)
    assert image.header.orientation == orientation
    assert np.array_equal(image.pixels, _transposed_by_pil(data))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("alpha", [False, True])  # OpenCV path, PIL path
def test_tiff_orientation_matches_pil(orientation: int, alpha: bool) -> None:
    pixels = _rgba() if alpha else _rgb()
    data = _encode_pil(Image.fromarray(pixels), "TIFF", tiffinfo={274: orientation})
    image = decode(data)
    _check_invariants(image)
    assert image.header.orientation == orientation
    assert np.array_equal(image.pixels, _transposed_by_pil(data))


def test_png_xmp_orientation_matches_pil() -> None:
    data = _png_with_xmp_orientation(_rgb(), 8)
    image = decode(data)
    assert image.header.orientation == 8
    assert np.array_equal(image.pixels, _transposed_by_pil(data))


def test_webp_exif_orientation() -> None:
    data = _encode_pil(Image.fromarray(_rgb()), "WEBP", lossless=True, exif=_pil_exif(8))
    image = decode(data)
    assert image.header.orientation == 8
    assert np.array_equal(image.pixels, _transposed_by_pil(data))


def test_invalid_orientation_counts_as_1() -> None:
    data = _encode_pil(Image.fromarray(_rgb()), "PNG", exif=_pil_exif(9))
    image = decode(data)
    assert image.header.orientation == 1
    assert np.array_equal(image.pixels, _rgb())


# ---------------------------------------------------------------------------------------------
# harmonise


def test_harmonise_plain_rgb_is_not_copied() -> None:
    a = _rgb()
    b = np.zeros((10, 20, 3), np.uint8)
    ha, hb, data_range = harmonise(a, b)
    assert ha is a and hb is b and data_range == 255
    a16 = a.astype(np.uint16)
    ha16, hb16, range16 = harmonise(a16, a16)
    assert ha16 is a16 and hb16 is a16 and range16 == 65535


def test_harmonise_8bit_with_16bit() -> None:
    a8 = _rgb()
    b16 = np.random.default_rng(8).integers(0, 65536, (30, 40, 3), dtype=np.uint16)
    for first, second in ((a8, b16), (b16, a8)):
        ha, hb, data_range = harmonise(first, second)
        assert data_range == 65535 and ha.dtype == hb.dtype == np.uint16
    ha, hb, _ = harmonise(a8, b16)
    assert np.array_equal(ha, a8.astype(np.int64) * 257)
    assert np.array_equal(hb, b16)


def _premultiplied_reference(x: np.ndarray, top: int) -> np.ndarray:
    """Independent float64 reference: round(c * a / top); no exact .5 ties exist (top odd)."""
    colour = x[..., :3].astype(np.float64) * x[..., 3:4].astype(np.float64) / top
    return np.concatenate([np.round(colour), x[..., 3:4]], axis=2).astype(x.dtype)


def test_harmonise_premultiplies_8bit_exactly_for_every_value() -> None:
    colour, alpha = np.meshgrid(np.arange(256), np.arange(256))
    rgba = np.dstack([colour, 255 - colour, colour // 2, alpha]).astype(np.uint8)
    before = rgba.copy()
    ha, hb, data_range = harmonise(rgba, rgba)
    assert data_range == 255 and ha.dtype == np.uint8
    assert np.array_equal(ha, _premultiplied_reference(rgba, 255))
    assert np.array_equal(hb, ha)
    assert np.array_equal(rgba, before)  # inputs untouched


def test_harmonise_premultiplies_16bit_exactly() -> None:
    rng = np.random.default_rng(9)
    rgba = rng.integers(0, 65536, (300, 400, 4), dtype=np.uint16)
    edges = np.array([0, 1, 2, 257, 32767, 32768, 65534, 65535], dtype=np.uint16)
    rgba[0, : edges.size * edges.size, :3] = np.repeat(edges, edges.size)[:, None]
    rgba[0, : edges.size * edges.size, 3] = np.tile(edges, edges.size)
    ha, _, data_range = harmonise(rgba, rgba)
    assert data_range == 65535
    assert np.array_equal(ha, _premultiplied_reference(rgba, 65535))


def test_harmonise_missing_alpha_is_opaque() -> None:
    rgb = _rgb()
    rgba = _rgba()
    ha, hb, data_range = harmonise(rgb, rgba)
    assert data_range == 255 and ha.shape == (48, 64, 4) and hb.shape == (48, 64, 4)
    assert np.array_equal(ha[..., :3], rgb) and (ha[..., 3] == 255).all()
    assert np.array_equal(hb, _premultiplied_reference(rgba, 255))
    # An opaque RGBA image compares exactly like its RGB.
    opaque = np.dstack([rgb, np.full((48, 64), 255, np.uint8)])
    hx, hy, _ = harmonise(rgb, opaque)
    assert np.array_equal(hx, hy)


def test_harmonise_mixed_depth_and_alpha() -> None:
    rgb8 = _rgb()
    rgba16 = _rgba().astype(np.uint16) * 257
    ha, hb, data_range = harmonise(rgb8, rgba16)
    assert data_range == 65535 and ha.dtype == hb.dtype == np.uint16
    assert np.array_equal(ha[..., :3], rgb8.astype(np.uint16) * 257)
    assert (ha[..., 3] == 65535).all()
    assert np.array_equal(hb, _premultiplied_reference(rgba16, 65535))


def test_harmonise_hidden_colour_does_not_count_but_alpha_does() -> None:
    rng = np.random.default_rng(10)
    a = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    b = a.copy()
    a[:5, :, 3] = 0
    b[:5, :, 3] = 0
    b[:5, :, :3] = rng.integers(0, 256, (5, 30, 3), dtype=np.uint8)  # other hidden colour
    assert not np.array_equal(a, b)
    ha, hb, _ = harmonise(a, b)
    assert np.array_equal(ha, hb)

    c = a.copy()
    c[10, 10, 3] = 255 - a[10, 10, 3]  # same colour, different alpha
    ha, hc, _ = harmonise(a, c)
    differs = (ha != hc).any(axis=2)
    assert differs[10, 10] and differs.sum() == 1


def test_harmonise_rejects_non_pixel_arrays() -> None:
    with pytest.raises(ValueError):
        harmonise(np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError):
        harmonise(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.uint8))


def test_decoded_pairs_harmonise() -> None:
    a = decode(_encode_cv2(_rgb(), ".png"))
    b = decode(_encode_pil(Image.fromarray(_rgba()), "PNG"))
    ha, hb, data_range = harmonise(a.pixels, b.pixels)
    assert ha.shape == hb.shape == (48, 64, 4) and data_range == a.data_range == 255
