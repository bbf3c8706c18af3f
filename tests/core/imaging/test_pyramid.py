"""Tile pyramids: layout, exact full-resolution tiles, area-averaged pixels, max-pooled heatmap."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.imaging import CompareOptions, ImagingError, compare, pyramid
from core.imaging.heatmap import ANTIALIAS_INDEX, GREY_INDEX, heatmap_palette
from core.imaging.pyramid import (
    PyramidLayout,
    halve_heatmap,
    heatmap_pyramid,
    pixel_pyramid,
    read_heatmap_indices,
)
from tests.support.images import decode_rgb, photo, png

RED = (255, 0, 0)


def _palette_rgb(data: bytes) -> np.ndarray:
    return heatmap_palette()[read_heatmap_indices(data, max_pixels=10**9)]


def test_layout_levels_halve_until_the_longest_side_fits() -> None:
    layout = PyramidLayout(7200, 5120, max_side=2048, tile_size=512)
    assert layout.top_level == 2
    assert [(d["width"], d["height"]) for d in layout.describe()] == [
        (7200, 5120),
        (3600, 2560),
        (1800, 1280),
    ]
    assert layout.grid(0) == (15, 10) and layout.grid(1) == (8, 5)
    assert layout.describe()[-1]["columns"] == 0  # the preview is whole, not tiled
    assert layout.has_tile(0, 14, 9) and not layout.has_tile(0, 15, 0)
    assert not layout.has_tile(2, 0, 0) and not layout.has_tile(-1, 0, 0)
    assert len(list(layout.tiles())) == 15 * 10 + 8 * 5
    # Odd sizes round up; an image that fits has one level and no tile.
    assert PyramidLayout(4097, 3, max_side=2048).level_size(1) == (2049, 2)
    assert PyramidLayout(4097, 3, max_side=2048).top_level == 2
    assert PyramidLayout(2048, 2048, max_side=2048).top_level == 0
    assert list(PyramidLayout(100, 100, max_side=2048).tiles()) == []
    with pytest.raises(ImagingError):
        PyramidLayout(0, 10, max_side=2048)


def test_level_zero_tiles_are_exact_crops_and_the_preview_fits() -> None:
    image = photo(1300, 700, seed=3)
    layout = PyramidLayout(1300, 700, max_side=400, tile_size=512)
    pieces = list(pixel_pyramid(image, layout))
    tiles = {(p.level, p.column, p.row): p for p in pieces if not p.is_preview}
    assert set(tiles) == set(layout.tiles())
    for (level, column, row), piece in tiles.items():
        if level == 0:
            crop = image[row * 512 : (row + 1) * 512, column * 512 : (column + 1) * 512]
            assert np.array_equal(decode_rgb(piece.png), crop)
    assert tiles[(0, 2, 1)].pixels.shape == (700 - 512, 1300 - 1024, 3)  # the corner tile
    preview = decode_rgb(pieces[-1].png)
    assert pieces[-1].is_preview and preview.shape == (175, 325, 3)  # 1300 / 4 = 325 <= 400
    # Area averaging: the preview is the 4x4 block means (what cv2's INTER_AREA gives).
    expected = cv2.resize(image, (325, 175), interpolation=cv2.INTER_AREA)
    assert np.abs(preview.astype(int) - expected.astype(int)).max() <= 2


def test_heatmap_halving_keeps_each_blocks_worst_level_and_grey_only_when_all_grey() -> None:
    indices = np.zeros((3, 5), dtype=np.uint8)
    indices[0, 1] = 200  # one strong pixel
    indices[2, :] = GREY_INDEX  # not compared
    indices[2, 4] = 3
    out = halve_heatmap(indices)
    assert out.shape == (2, 3)
    assert out[0].tolist() == [200, 0, 0]
    assert out[1].tolist() == [GREY_INDEX, GREY_INDEX, 3]


def test_a_single_small_edit_stays_red_in_the_heatmap_preview() -> None:
    """A real comparison: a 3x3 repainted patch in a 2400x1600 photo; the heatmap preview is
    reduced 16x (150x100), and the patch's block is still full red (an average is not)."""
    a = photo(2400, 1600, seed=5)
    b = a.copy()
    b[1000:1003, 1700:1703] = 255 - b[1000:1003, 1700:1703]
    result = compare(png(a), png(b), CompareOptions(mode="pixel", preview_max_side=None))
    indices = read_heatmap_indices(result.heatmap_png, max_pixels=10**8)
    layout = PyramidLayout(2400, 1600, max_side=150)
    preview = next(p for p in heatmap_pyramid(indices, layout) if p.is_preview)
    colours = _palette_rgb(preview.png)
    assert colours.shape == (100, 150, 3)
    assert tuple(colours[1000 // 16, 1700 // 16]) == RED
    red = np.all(colours == RED, axis=2)
    assert red.sum() <= 4  # only the edit's block(s), not the photo's grain
    # The averaging alternative washes it out: the mean colour of the same block is not red.
    full = heatmap_palette()[indices]
    averaged = cv2.resize(full, (150, 100), interpolation=cv2.INTER_AREA)
    assert tuple(averaged[1000 // 16, 1700 // 16]) != RED
    # Level 0 tiles of the heatmap are the heatmap itself, index for index.
    tile = next(
        p for p in heatmap_pyramid(indices, layout) if (p.level, p.column, p.row) == (0, 3, 1)
    )
    tile_indices = read_heatmap_indices(tile.png, max_pixels=10**8)
    assert np.array_equal(tile_indices, indices[512:1024, 1536:2048])


def test_pieces_must_match_the_layout_and_heatmaps_must_be_palette_pngs() -> None:
    with pytest.raises(ImagingError) as info:
        list(pixel_pyramid(photo(64, 48), PyramidLayout(48, 64, max_side=32)))
    assert info.value.code.value == "size_mismatch"
    with pytest.raises(ImagingError) as info:
        read_heatmap_indices(png(photo(64, 48)), max_pixels=10**6)
    assert info.value.code.value == "corrupt_image"
    with pytest.raises(ImagingError) as info:
        read_heatmap_indices(b"not a png", max_pixels=10**6)
    assert info.value.code.value == "corrupt_image"
    heat = compare(png(photo(64, 48)), png(photo(64, 48, seed=1))).heatmap_png
    with pytest.raises(ImagingError) as info:
        read_heatmap_indices(heat, max_pixels=100)
    assert info.value.code.value == "image_too_large"


def test_anti_aliased_pixels_show_only_where_nothing_else_is_a_change() -> None:
    """Anti-aliased pixels have a palette index of their own (254, magenta): a block keeps it
    only when no other pixel is above the tolerance."""
    blocks = np.array(
        [
            [ANTIALIAS_INDEX, 5, ANTIALIAS_INDEX, 100, ANTIALIAS_INDEX, GREY_INDEX, 3, 40],
            [0, 0, 0, 0, GREY_INDEX, GREY_INDEX, 0, 0],
        ],
        dtype=np.uint8,
    )
    out = pyramid.halve_heatmap(blocks, tolerance_level=25).tolist()
    assert out == [[ANTIALIAS_INDEX, 100, ANTIALIAS_INDEX, 40]]
