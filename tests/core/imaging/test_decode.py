"""Tests of core.imaging.decode: round trips for every format, EXIF orientation, and the alpha
rule of ``harmonise``.

References are independent of the code under test: the source arrays themselves for lossless
formats, PIL (``Image.convert``, ``ImageOps.exif_transpose``) for palette/transparency and
orientation, and plain numpy float arithmetic for premultiplication.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from core.imaging.decode import DecodedImage, decode, harmonise
from core.imaging.header import ImageHeader
from tests.support.codecs import (
    encode_cv2,
    encode_pil,
    pil_exif,
    png_with_xmp_orientation,
    small_photo,
    small_photo_rgba,
)


def _check_invariants(image: DecodedImage) -> None:
    pixels, header = image.pixels, image.header
    assert pixels.flags["C_CONTIGUOUS"]
    assert pixels.ndim == 3 and pixels.shape[2] == (4 if header.has_alpha else 3)
    assert pixels.shape[:2] == (header.height, header.width)
    assert pixels.dtype == (np.uint16 if header.bit_depth == 16 else np.uint8)
    assert image.data_range == (65535 if header.bit_depth == 16 else 255)


# ---------------------------------------------------------------------------------------------
# Round trips


def test_png_rgb_8bit() -> None:
    rgb = small_photo()
    image = decode(encode_cv2(rgb, ".png"))
    _check_invariants(image)
    assert image.header == ImageHeader("png", 64, 48, 8, False, 1)
    assert np.array_equal(image.pixels, rgb)


def test_png_rgba_8bit() -> None:
    rgba = small_photo_rgba()
    image = decode(encode_pil(Image.fromarray(rgba), "PNG"))
    _check_invariants(image)
    assert image.header.has_alpha
    assert np.array_equal(image.pixels, rgba)  # straight alpha, colour kept under alpha 0


def test_png_grey_becomes_rgb() -> None:
    grey = small_photo()[..., 1].copy()
    image = decode(encode_pil(Image.fromarray(grey), "PNG"))
    _check_invariants(image)
    assert np.array_equal(image.pixels, np.dstack([grey, grey, grey]))


def test_png_1bit_becomes_0_or_255() -> None:
    bits = small_photo()[..., 0] > 128
    image = decode(encode_pil(Image.fromarray(bits), "PNG"))
    expected = np.where(bits, 255, 0).astype(np.uint8)
    assert np.array_equal(image.pixels, np.dstack([expected] * 3))


def test_png_palette_becomes_rgb() -> None:
    palette = Image.fromarray(small_photo()).quantize(32)
    image = decode(encode_pil(palette, "PNG"))
    _check_invariants(image)
    assert not image.header.has_alpha
    assert np.array_equal(image.pixels, np.asarray(palette.convert("RGB")))


def test_png_palette_with_transparency_becomes_rgba() -> None:
    palette = Image.fromarray(small_photo()).quantize(32)
    data = encode_pil(palette, "PNG", transparency=5)
    image = decode(data)
    _check_invariants(image)
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))  # PIL's reading
    assert np.array_equal(image.pixels, reference)
    assert (image.pixels[..., 3] == 0).any() and (image.pixels[..., 3] == 255).any()


def test_png_grey_with_transparency_key_becomes_rgba() -> None:
    grey = small_photo()[..., 1].copy()
    key = int(grey[10, 10])
    data = encode_pil(Image.fromarray(grey), "PNG", transparency=key)
    image = decode(data)
    _check_invariants(image)
    assert np.array_equal(image.pixels, np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")))
    assert np.array_equal(image.pixels[..., 3] == 0, grey == key)


def test_png_16bit_grey_with_transparency_key() -> None:
    grey16 = np.random.default_rng(3).integers(0, 65536, (48, 64), dtype=np.uint16)
    key = int(grey16[5, 7])
    image = decode(encode_pil(Image.fromarray(grey16), "PNG", transparency=key))
    _check_invariants(image)
    assert image.header.bit_depth == 16
    assert np.array_equal(image.pixels[..., :3], np.dstack([grey16] * 3))
    assert np.array_equal(image.pixels[..., 3], np.where(grey16 == key, 0, 65535))


@pytest.mark.parametrize("channels", [3, 4])
def test_png_16bit_keeps_values_exactly(channels: int) -> None:
    pixels = np.random.default_rng(4).integers(0, 65536, (48, 64, channels), dtype=np.uint16)
    image = decode(encode_cv2(pixels, ".png"))
    _check_invariants(image)
    assert image.header.bit_depth == 16 and image.data_range == 65535
    assert np.array_equal(image.pixels, pixels)


def test_png_16bit_grey() -> None:
    grey16 = np.random.default_rng(5).integers(0, 65536, (48, 64), dtype=np.uint16)
    image = decode(encode_pil(Image.fromarray(grey16), "PNG"))
    _check_invariants(image)
    assert np.array_equal(image.pixels, np.dstack([grey16] * 3))


def test_jpeg_is_close() -> None:
    rgb = small_photo()
    data = encode_cv2(rgb, ".jpg")
    image = decode(data)
    _check_invariants(image)
    assert image.header == ImageHeader("jpeg", 64, 48, 8, False, 1)
    error = np.abs(image.pixels.astype(int) - rgb)
    assert error.mean() < 4
    pil_pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # other decoder
    assert np.abs(image.pixels.astype(int) - pil_pixels).max() <= 3


def test_jpeg_grey_becomes_rgb() -> None:
    grey = small_photo()[..., 1].copy()
    image = decode(encode_pil(Image.fromarray(grey), "JPEG", quality=95))
    _check_invariants(image)
    assert np.array_equal(image.pixels[..., 0], image.pixels[..., 2])
    assert np.abs(image.pixels[..., 0].astype(int) - grey).mean() < 3


@pytest.mark.parametrize("alpha", [False, True])
def test_webp_lossless_is_exact(alpha: bool) -> None:
    pixels = small_photo_rgba() if alpha else small_photo()
    image = decode(encode_pil(Image.fromarray(pixels), "WEBP", lossless=True, exact=True))
    _check_invariants(image)
    assert image.header.format == "webp" and image.header.has_alpha == alpha
    assert np.array_equal(image.pixels, pixels)


def test_webp_lossy_is_close() -> None:
    rgb = small_photo()
    image = decode(encode_pil(Image.fromarray(rgb), "WEBP", quality=90))
    _check_invariants(image)
    assert np.abs(image.pixels.astype(int) - rgb).mean() < 6


def test_tiff_8bit_rgb_and_16bit() -> None:
    rgb = small_photo()
    image = decode(encode_pil(Image.fromarray(rgb), "TIFF", compression="tiff_lzw"))
    _check_invariants(image)
    assert image.header.format == "tiff"
    assert np.array_equal(image.pixels, rgb)
    rgb16 = np.random.default_rng(6).integers(0, 65536, (48, 64, 3), dtype=np.uint16)
    image16 = decode(encode_cv2(rgb16, ".tiff"))
    _check_invariants(image16)
    assert image16.header.bit_depth == 16
    assert np.array_equal(image16.pixels, rgb16)


def test_tiff_rgba_keeps_straight_alpha() -> None:
    # OpenCV would return premultiplied colour for this file; we must not.
    rgba = small_photo_rgba()
    image = decode(encode_pil(Image.fromarray(rgba), "TIFF"))
    _check_invariants(image)
    assert np.array_equal(image.pixels, rgba)


def test_tiff_grey_alpha_becomes_rgba() -> None:
    rgba = small_photo_rgba()
    grey_alpha = Image.merge("LA", [Image.fromarray(rgba[..., 0]), Image.fromarray(rgba[..., 3])])
    image = decode(encode_pil(grey_alpha, "TIFF"))
    _check_invariants(image)
    expected = np.dstack([rgba[..., 0]] * 3 + [rgba[..., 3]])
    assert np.array_equal(image.pixels, expected)


@pytest.mark.parametrize("alpha", [False, True])
def test_bmp(alpha: bool) -> None:
    pixels = small_photo_rgba() if alpha else small_photo()
    image = decode(encode_cv2(pixels, ".bmp"))  # OpenCV writes 32-bit BMP with alpha mask
    _check_invariants(image)
    assert image.header.format == "bmp" and image.header.has_alpha == alpha
    assert np.array_equal(image.pixels, pixels)


def test_gif_first_frame_of_animation() -> None:
    rng = np.random.default_rng(7)
    frames = [Image.fromarray(small_photo()).quantize(64)] + [
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).quantize(64)
        for _ in range(2)
    ]
    data = encode_pil(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    image = decode(data)
    _check_invariants(image)
    assert image.header == ImageHeader("gif", 64, 48, 8, False, 1)
    first = np.asarray(frames[0].convert("RGB"))  # the source frame: GIF is lossless here
    assert np.array_equal(image.pixels, first)
    assert not np.array_equal(image.pixels, np.asarray(frames[1].convert("RGB")))


def test_gif_with_transparency_becomes_rgba() -> None:
    palette = Image.fromarray(small_photo()).quantize(64)
    image = decode(encode_pil(palette, "GIF", transparency=3))
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
    data = encode_pil(
        Image.fromarray(small_photo()), "JPEG", quality=95, exif=pil_exif(orientation)
    )
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
    data = encode_pil(Image.fromarray(small_photo_rgba()), "PNG", exif=pil_exif(orientation))
    image = decode(data)
    _check_invariants(image)
    assert image.header.orientation == orientation
    assert np.array_equal(image.pixels, _transposed_by_pil(data))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("alpha", [False, True])  # OpenCV path, PIL path
def test_tiff_orientation_matches_pil(orientation: int, alpha: bool) -> None:
    pixels = small_photo_rgba() if alpha else small_photo()
    data = encode_pil(Image.fromarray(pixels), "TIFF", tiffinfo={274: orientation})
    image = decode(data)
    _check_invariants(image)
    assert image.header.orientation == orientation
    assert np.array_equal(image.pixels, _transposed_by_pil(data))


def test_png_xmp_orientation_matches_pil() -> None:
    data = png_with_xmp_orientation(small_photo(), 8)
    image = decode(data)
    assert image.header.orientation == 8
    assert np.array_equal(image.pixels, _transposed_by_pil(data))


def test_webp_exif_orientation() -> None:
    data = encode_pil(Image.fromarray(small_photo()), "WEBP", lossless=True, exif=pil_exif(8))
    image = decode(data)
    assert image.header.orientation == 8
    assert np.array_equal(image.pixels, _transposed_by_pil(data))


def test_invalid_orientation_counts_as_1() -> None:
    data = encode_pil(Image.fromarray(small_photo()), "PNG", exif=pil_exif(9))
    image = decode(data)
    assert image.header.orientation == 1
    assert np.array_equal(image.pixels, small_photo())


# ---------------------------------------------------------------------------------------------
# harmonise


def test_harmonise_plain_rgb_is_not_copied() -> None:
    a = small_photo()
    b = np.zeros((10, 20, 3), np.uint8)
    ha, hb, data_range = harmonise(a, b)
    assert ha is a and hb is b and data_range == 255
    a16 = a.astype(np.uint16)
    ha16, hb16, range16 = harmonise(a16, a16)
    assert ha16 is a16 and hb16 is a16 and range16 == 65535


def test_harmonise_8bit_with_16bit() -> None:
    a8 = small_photo()
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
    rgb = small_photo()
    rgba = small_photo_rgba()
    ha, hb, data_range = harmonise(rgb, rgba)
    assert data_range == 255 and ha.shape == (48, 64, 4) and hb.shape == (48, 64, 4)
    assert np.array_equal(ha[..., :3], rgb) and (ha[..., 3] == 255).all()
    assert np.array_equal(hb, _premultiplied_reference(rgba, 255))
    # An opaque RGBA image compares exactly like its RGB.
    opaque = np.dstack([rgb, np.full((48, 64), 255, np.uint8)])
    hx, hy, _ = harmonise(rgb, opaque)
    assert np.array_equal(hx, hy)


def test_harmonise_mixed_depth_and_alpha() -> None:
    rgb8 = small_photo()
    rgba16 = small_photo_rgba().astype(np.uint16) * 257
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
    a = decode(encode_cv2(small_photo(), ".png"))
    b = decode(encode_pil(Image.fromarray(small_photo_rgba()), "PNG"))
    ha, hb, data_range = harmonise(a.pixels, b.pixels)
    assert ha.shape == hb.shape == (48, 64, 4) and data_range == a.data_range == 255
