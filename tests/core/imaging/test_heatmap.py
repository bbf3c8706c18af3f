"""The heatmap colour scale, its palette PNG (decoded by PIL and OpenCV) and the preview."""

from __future__ import annotations

import colorsys
import io
import itertools
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage.measure import block_reduce

from core.imaging import heatmap, parallel
from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.heatmap import (
    ANTIALIAS_MAGENTA,
    HEATMAP_BREAKPOINTS,
    NEUTRAL_GREY,
    heatmap_indices,
    heatmap_palette,
    render_heatmap,
    render_preview,
)

BLUE = (0, 0, 255)
RED = (255, 0, 0)


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """Walk a PNG's chunks, checking every CRC; return ``(type, payload)`` pairs."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, payload = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        chunks.append((kind, payload))
        pos += 12 + length
    assert chunks[-1] == (b"IEND", b"")
    return chunks


def _decode_pil(png: bytes) -> tuple[np.ndarray, np.ndarray]:
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "P"
        indices = np.asarray(image)
        rgb = np.asarray(image.convert("RGB"))
    return indices, rgb


def _decode_cv2_rgb(png: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None
    return bgr[..., ::-1]


def _known_diff() -> tuple[np.ndarray, np.ndarray]:
    """Every level 0..255 in a ramp, random levels, and an invalid band; 1100x700 (2 strips)."""
    rng = np.random.default_rng(3)
    diff = rng.integers(0, 256, (700, 1100), dtype=np.uint8)
    diff[:, :256] = np.arange(256, dtype=np.uint8)
    diff[300:400] = 0
    diff[350:, 300:] = 0  # the lower strip is mostly unchanged, the upper one dense noise
    valid = np.ones(diff.shape, dtype=bool)
    valid[50:80, 500:900] = False
    return diff, valid


# --- colour scale -------------------------------------------------------------------------


def test_palette_shape_ends_and_grey() -> None:
    palette = heatmap_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert tuple(palette[0]) == BLUE
    assert tuple(palette[253]) == RED
    assert tuple(palette[254]) == ANTIALIAS_MAGENTA
    assert tuple(palette[255]) == NEUTRAL_GREY
    # Only an identical pixel is pure blue; grey and magenta are never a difference level's.
    assert not (palette[1:254] == BLUE).all(axis=1).any()
    assert not (palette[:254] == NEUTRAL_GREY).all(axis=1).any()
    assert not (palette[:254] == ANTIALIAS_MAGENTA).all(axis=1).any()
    # Built once; callers cannot change the cached table.
    assert heatmap_palette() is palette
    assert not palette.flags.writeable


def test_palette_follows_the_breakpoints() -> None:
    palette = heatmap_palette().astype(np.int64)
    assert HEATMAP_BREAKPOINTS[0] == (0.0, BLUE)
    assert HEATMAP_BREAKPOINTS[-1][1] == RED
    for d, colour in HEATMAP_BREAKPOINTS:
        level = d * 255
        lo, hi = int(np.floor(level)), min(int(np.ceil(level)), 253)
        # The breakpoint colour lies between the two palette entries around it.
        for channel in range(3):
            low, high = sorted((palette[lo, channel], palette[hi, channel]))
            assert low - 1 <= colour[channel] <= high + 1
    top = int(np.ceil(HEATMAP_BREAKPOINTS[-1][0] * 255))
    assert (palette[top:254] == RED).all()
    # Compression noise of a few levels is blue-green, a pasted object (level >= 80) is red.
    assert palette[3, 2] > palette[3, 0] and palette[10, 1] > 150 and palette[10, 0] == 0
    assert tuple(palette[80]) == RED


def test_palette_progresses_monotonically_from_blue_to_red() -> None:
    palette = heatmap_palette()[:254].astype(np.int64)
    # Red never falls and blue never rises as the difference grows ...
    assert (np.diff(palette[:, 0]) >= 0).all()
    assert (np.diff(palette[:, 2]) <= 0).all()
    # ... and the hue walks from blue (240 deg) through green and yellow down to red (0 deg).
    hues = [colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360 for rgb in palette]
    assert hues[0] == pytest.approx(240)
    assert all(later <= earlier + 1e-9 for earlier, later in itertools.pairwise(hues))
    assert hues[-1] == pytest.approx(0)
    # Every step between neighbouring levels is small: no jumps in the scale.
    assert np.abs(np.diff(palette, axis=0)).max() <= 80


def test_indices_clamp_255_and_mark_invalid_grey() -> None:
    diff = np.array([[0, 1, 254, 255], [7, 8, 9, 10]], dtype=np.uint8)
    valid = np.array([[True, True, True, True], [True, False, True, False]])
    np.testing.assert_array_equal(heatmap_indices(diff, None), [[0, 1, 253, 253], [7, 8, 9, 10]])
    np.testing.assert_array_equal(
        heatmap_indices(diff, valid), [[0, 1, 253, 253], [7, 255, 9, 255]]
    )
    np.testing.assert_array_equal(diff, [[0, 1, 254, 255], [7, 8, 9, 10]])  # input untouched


def test_antialiased_pixels_are_magenta_and_grey_wins() -> None:
    diff = np.array([[0, 40, 200, 30]], dtype=np.uint8)
    valid = np.array([[True, True, True, False]])
    aa = np.array([[False, True, False, True]])
    np.testing.assert_array_equal(heatmap_indices(diff, valid, aa), [[0, 254, 200, 255]])
    _, rgb = _decode_pil(render_heatmap(diff, valid=valid, antialiased=aa))
    assert [tuple(p) for p in rgb[0]] == [BLUE, ANTIALIAS_MAGENTA, RED, NEUTRAL_GREY]


# --- the PNG ------------------------------------------------------------------------------


def test_png_is_an_8bit_palette_image_with_the_scale() -> None:
    diff, valid = _known_diff()
    png = render_heatmap(diff, valid=valid)
    chunks = _chunks(png)
    kinds = [kind for kind, _ in chunks]
    assert kinds[:2] == [b"IHDR", b"PLTE"] and b"IDAT" in kinds
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (width, height, depth, colour_type, interlace) == (1100, 700, 8, 3, 0)
    assert chunks[1][1] == heatmap_palette().tobytes()
    idat = b"".join(payload for kind, payload in chunks if kind == b"IDAT")
    raw = zlib.decompress(idat)  # one byte per pixel plus one filter byte per row
    assert len(raw) == height * (width + 1)


def test_png_decodes_to_the_right_colours_in_pil_and_opencv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    diff, valid = _known_diff()
    strategies: list[int] = []
    deflate = heatmap._deflate_strip

    def recording(part: tuple[memoryview, int, bool]) -> bytes:
        strategies.append(part[1])
        return deflate(part)

    monkeypatch.setattr(heatmap, "_deflate_strip", recording)
    expected_indices = np.minimum(diff, 253)
    expected_indices[~valid] = 255
    expected_rgb = heatmap_palette()[expected_indices]
    png = render_heatmap(diff, valid=valid)
    indices, rgb = _decode_pil(png)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(rgb, expected_rgb)
    np.testing.assert_array_equal(_decode_cv2_rgb(png), expected_rgb)
    assert sorted(strategies) == sorted([zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE])  # both coders decode
    # Spot checks in plain colours: identical -> blue, level 255 -> red, ignored -> grey.
    assert tuple(rgb[350, 600]) == BLUE
    assert tuple(rgb[0, 255]) == RED
    assert tuple(rgb[60, 600]) == NEUTRAL_GREY


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (4, 1), (1, 700), (700, 1), (1080, 1920)])
def test_png_round_trips_any_size(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(4)
    diff = rng.integers(0, 256, shape, dtype=np.uint8)
    valid = rng.random(shape) < 0.9
    expected = np.where(valid, np.minimum(diff, 253), 255)
    indices, _ = _decode_pil(render_heatmap(diff, valid=valid))
    np.testing.assert_array_equal(indices, expected)
    preview, _ = _decode_pil(render_preview(diff, valid=valid, max_side=16))
    assert max(preview.shape) <= 16


def test_png_is_deterministic_and_independent_of_cpu_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    diff, valid = _known_diff()
    first = render_heatmap(diff, valid=valid)
    assert render_heatmap(diff.copy(), valid=valid.copy()) == first
    monkeypatch.setattr(parallel, "cpu_count", lambda: 1)  # no threads at all
    assert render_heatmap(diff, valid=valid) == first


def test_png_of_an_unchanged_image_is_tiny() -> None:
    png = render_heatmap(np.zeros((1080, 1920), dtype=np.uint8))
    assert len(png) < 20_000  # runs of level 0 compress to almost nothing
    indices, _ = _decode_pil(png)
    assert not indices.any()


def test_rejects_malformed_inputs() -> None:
    diff = np.zeros((4, 5), dtype=np.uint8)
    for bad in (diff.astype(np.uint16), np.zeros((4, 5, 3), np.uint8), np.zeros((0, 5), np.uint8)):
        with pytest.raises(ImagingError) as excinfo:
            render_heatmap(bad)
        assert excinfo.value.code is ErrorCode.UNSUPPORTED_FORMAT
    with pytest.raises(ImagingError) as excinfo:
        render_heatmap(diff, valid=np.ones((5, 4), dtype=bool))
    assert excinfo.value.code is ErrorCode.SIZE_MISMATCH
    with pytest.raises(ImagingError) as excinfo:
        heatmap_indices(diff, np.ones((4, 5), dtype=np.uint8))
    assert excinfo.value.code is ErrorCode.UNSUPPORTED_FORMAT
    with pytest.raises(ImagingError) as excinfo:
        render_preview(diff, max_side=0)
    assert excinfo.value.code is ErrorCode.INVALID_OPTIONS


# --- the preview --------------------------------------------------------------------------


def test_preview_keeps_a_small_red_edit_visible() -> None:
    diff = np.zeros((1080, 1920), dtype=np.uint8)
    diff[:, :] = 2  # faint noise everywhere
    diff[601:604, 1201:1204] = 200  # a 3x3 edit inside one 4x4 preview block
    png = render_preview(diff, max_side=512)
    indices, rgb = _decode_pil(png)
    assert rgb.shape == (270, 480, 3)  # factor 4: 1920 / 4 = 480, 1080 / 4 = 270
    red = np.argwhere((rgb == RED).all(axis=-1))
    np.testing.assert_array_equal(red, [[150, 300]])  # the block of pixels 600..603 x 1200..1203
    assert (indices[indices != 200] == 2).all()
    np.testing.assert_array_equal(_decode_cv2_rgb(png), rgb)


@pytest.mark.parametrize(
    ("shape", "max_side", "expected"),
    [
        ((1080, 1920), 512, (270, 480)),
        ((1000, 3), 512, (500, 2)),
        ((3, 1000), 100, (1, 100)),
        ((513, 512), 512, (257, 256)),
        ((100, 60), 512, (100, 60)),  # already small: full size
        ((700, 1100), 16, (11, 16)),  # factor 69
    ],
)
def test_preview_size_respects_max_side(
    shape: tuple[int, int], max_side: int, expected: tuple[int, int]
) -> None:
    rng = np.random.default_rng(5)
    diff = rng.integers(0, 256, shape, dtype=np.uint8)
    indices, _ = _decode_pil(render_preview(diff, max_side=max_side))
    assert indices.shape == expected
    assert max(indices.shape) <= max_side
    # Block maximum, pinned against scikit-image's block_reduce (zero padding at the edges).
    factor = -(-max(shape) // max_side)
    reference = block_reduce(diff, (factor, factor), np.max, cval=0)
    np.testing.assert_array_equal(indices, np.minimum(reference, 253))


def test_preview_is_grey_only_where_a_block_is_entirely_invalid() -> None:
    rng = np.random.default_rng(6)
    diff = rng.integers(0, 50, (400, 400), dtype=np.uint8)
    diff[0:2, 0:4] = 0  # identical pixels in a partly valid block stay blue, not grey
    valid = np.ones(diff.shape, dtype=bool)
    valid[100:200, 100:200] = False  # exactly blocks 50..99 at factor 2
    valid[0:2, 0:3] = False  # block (0, 0) has no valid pixel; block (0, 1) keeps column 3
    diff[100:200, 100:200] = 255  # invalid pixels must not leak into the preview
    indices, rgb = _decode_pil(render_preview(diff, valid=valid, max_side=200))
    assert indices.shape == (200, 200)
    assert (indices[50:100, 50:100] == 255).all()
    assert tuple(rgb[0, 0]) == NEUTRAL_GREY
    assert tuple(rgb[0, 1]) == BLUE
    masked = np.where(valid, diff, 0)
    reference = block_reduce(masked, (2, 2), np.max)
    any_valid = block_reduce(valid, (2, 2), np.any)
    np.testing.assert_array_equal(indices, np.where(any_valid, np.minimum(reference, 253), 255))


def test_preview_of_an_image_that_fits_is_the_heatmap() -> None:
    diff, valid = _known_diff()
    diff, valid = diff[:300, :500], valid[:300, :500]
    assert render_preview(diff, valid=valid, max_side=512) == render_heatmap(diff, valid=valid)


def test_preview_shows_antialiasing_only_where_no_change_is_in_the_block() -> None:
    diff = np.full((64, 64), 2, dtype=np.uint8)  # faint noise, below a tolerance of 25 levels
    aa = np.zeros(diff.shape, dtype=bool)
    diff[0:8, 0:8], aa[0:8, 0:8] = 120, True  # block (0, 0): only smoothed edges
    diff[8:16, 8:16], aa[8:16, 8:16] = 120, True  # block (1, 1): smoothed edges ...
    diff[12, 12], aa[12, 12] = 200, False  # ... and one real change
    indices, rgb = _decode_pil(render_preview(diff, max_side=8, antialiased=aa, tolerance_level=25))
    assert indices.shape == (8, 8)
    assert tuple(rgb[0, 0]) == ANTIALIAS_MAGENTA
    assert tuple(rgb[1, 1]) == RED  # the change is never hidden in magenta
    assert (indices[2:, 2:] == 2).all()  # noise-only blocks keep their level
    # With nothing reduced, the preview is the full heatmap, magenta included.
    full = render_preview(diff, max_side=64, antialiased=aa, tolerance_level=25)
    assert full == render_heatmap(diff, antialiased=aa)
