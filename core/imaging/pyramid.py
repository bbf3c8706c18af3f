"""Tile pyramids of the viewer's images (A, B in A's frame, the heatmap) for big comparisons.

Layout
    Level 0 is the image at full resolution (A's grid); level ``k`` is ``ceil(W / 2**k) x
    ceil(H / 2**k)``, each level halving the one below. The *top* level is the first whose
    longest side is at most ``max_side``: it is the downscaled preview, stored whole. Every
    level below it is cut into ``tile_size`` squares (the last column and row are narrower),
    tile ``(column, row)`` covering level pixels ``[column * tile_size, ...)``. An image that
    already fits has one level (0, the preview) and no tiles.

Downscaling
    A and B: OpenCV's area average over each 2x2 block (``INTER_AREA``), straight alpha as
    stored. The heatmap: the *maximum* difference level of each block's compared pixels (a
    block is grey only when none of its pixels was compared), so a single changed pixel stays
    red at every level; an average would wash a small red patch into blue-green. Halving by
    maxima repeatedly is exactly the maximum over ``2**k x 2**k`` blocks.

Pure: arrays in, PNG bytes out, one level in memory beside its source at a time.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache, partial

import cv2
import numpy as np
from PIL import PngImagePlugin

from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.heatmap import ANTIALIAS_INDEX, GREY_INDEX, encode_palette_png, heatmap_palette
from core.imaging.previews import to_png

__all__ = [
    "TILE_SIZE",
    "PyramidLayout",
    "PyramidPiece",
    "halve_heatmap",
    "halve_pixels",
    "heatmap_pyramid",
    "pixel_pyramid",
    "read_heatmap_indices",
]

#: Side of a tile in pixels (a 512x512 RGB PNG is ~0.1-0.8 MB, one request per tile).
TILE_SIZE = 512


@dataclass(frozen=True)
class PyramidLayout:
    """The levels and tiles of a ``width x height`` image (see the module docstring)."""

    width: int
    height: int
    max_side: int
    tile_size: int = TILE_SIZE

    def __post_init__(self) -> None:
        if min(self.width, self.height, self.max_side, self.tile_size) < 1:
            raise ImagingError(ErrorCode.INVALID_OPTIONS, f"bad pyramid layout {self}")

    @property
    def top_level(self) -> int:
        """The preview's level: the first whose longest side is <= ``max_side`` (>= 0)."""
        level, longest = 0, max(self.width, self.height)
        while -(-longest // 2**level) > self.max_side:
            level += 1
        return level

    def level_size(self, level: int) -> tuple[int, int]:
        """``(width, height)`` of a level in pixels."""
        return -(-self.width // 2**level), -(-self.height // 2**level)

    def grid(self, level: int) -> tuple[int, int]:
        """``(columns, rows)`` of a tiled level (0 .. top_level - 1)."""
        width, height = self.level_size(level)
        return -(-width // self.tile_size), -(-height // self.tile_size)

    def has_tile(self, level: int, column: int, row: int) -> bool:
        """Whether ``(level, column, row)`` is a tile of this layout."""
        if not 0 <= level < self.top_level:
            return False
        columns, rows = self.grid(level)
        return 0 <= column < columns and 0 <= row < rows

    def tiles(self) -> Iterator[tuple[int, int, int]]:
        """Every tile as ``(level, column, row)``, level 0 first."""
        for level in range(self.top_level):
            columns, rows = self.grid(level)
            for row in range(rows):
                for column in range(columns):
                    yield level, column, row

    def describe(self) -> list[dict[str, int]]:
        """The levels as ``{level, width, height, columns, rows}`` (0 columns/rows: the top)."""
        out = []
        for level in range(self.top_level + 1):
            width, height = self.level_size(level)
            columns, rows = self.grid(level) if level < self.top_level else (0, 0)
            out.append(
                {"level": level, "width": width, "height": height, "columns": columns, "rows": rows}
            )
        return out


@dataclass(frozen=True)
class PyramidPiece:
    """One image of a pyramid: a tile, or (``column == row == -1``) the whole top level.

    ``pixels`` is a view into its level (``HxWxC`` ``uint8``, or ``HxW`` heatmap indices when
    ``heatmap``); :attr:`png` encodes it (call it from any thread: the encoders release the
    GIL).
    """

    level: int
    column: int
    row: int
    pixels: np.ndarray
    heatmap: bool = False

    @property
    def is_preview(self) -> bool:
        """Whether this is the downscaled preview (the top level, whole)."""
        return self.column < 0

    @property
    def png(self) -> bytes:
        """The piece as PNG: RGB(A) for A and B, an 8-bit palette PNG for the heatmap."""
        pixels = np.ascontiguousarray(self.pixels)
        return encode_palette_png(pixels, heatmap_palette()) if self.heatmap else to_png(pixels)


def halve_pixels(pixels: np.ndarray) -> np.ndarray:
    """Area-average ``HxWxC`` ``uint8`` pixels into ``ceil(H/2) x ceil(W/2)``."""
    height, width = pixels.shape[:2]
    size = (-(-width // 2), -(-height // 2))
    out = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return out if out.ndim == pixels.ndim else out[..., np.newaxis]


@lru_cache(maxsize=256)
def _ranks(tolerance_level: int) -> tuple[np.ndarray, np.ndarray]:
    """Severity rank (0..255) of each palette index, and the index of each rank.

    Grey (not compared) ranks lowest, then the levels up to ``tolerance_level`` (noise), then
    the anti-aliased index (rendering noise: shown only where nothing in the block is a change,
    as ``heatmap.render_preview`` does), then the levels above.
    """
    order = [GREY_INDEX]
    levels = [i for i in range(256) if i not in (GREY_INDEX, ANTIALIAS_INDEX)]
    order += [i for i in levels if i <= tolerance_level]
    order.append(ANTIALIAS_INDEX)
    order += [i for i in levels if i > tolerance_level]
    index_of_rank = np.array(order, dtype=np.uint8)
    rank_of_index = np.empty(256, dtype=np.uint8)
    rank_of_index[index_of_rank] = np.arange(256, dtype=np.uint8)
    rank_of_index.setflags(write=False)
    index_of_rank.setflags(write=False)
    return rank_of_index, index_of_rank


def halve_heatmap(indices: np.ndarray, *, tolerance_level: int = 0) -> np.ndarray:
    """Reduce ``HxW`` heatmap palette indices 2x2 -> 1, keeping each block's most severe pixel:
    its largest compared level (grey only when the whole block is grey; an anti-aliased pixel
    only when no other pixel of the block is above ``tolerance_level``, 0..255)."""
    rank_of_index, index_of_rank = _ranks(min(max(int(tolerance_level), 0), 255))
    coded = rank_of_index[indices]
    height, width = coded.shape
    if height % 2 or width % 2:
        padded = np.zeros((height + height % 2, width + width % 2), dtype=np.uint8)
        padded[:height, :width] = coded  # rank 0 (grey) never wins over a compared pixel
        coded = padded
    out = np.maximum(coded[0::2, 0::2], coded[0::2, 1::2])
    np.maximum(out, coded[1::2, 0::2], out=out)
    np.maximum(out, coded[1::2, 1::2], out=out)
    return index_of_rank[out]


def _check(image: np.ndarray, layout: PyramidLayout) -> None:
    if image.shape[:2] != (layout.height, layout.width):
        raise ImagingError(
            ErrorCode.SIZE_MISMATCH,
            f"image is {image.shape[1]}x{image.shape[0]}, layout {layout.width}x{layout.height}",
        )


def pixel_pyramid(
    pixels: np.ndarray, layout: PyramidLayout, *, tiles: bool = True
) -> Iterator[PyramidPiece]:
    """The tiles (level 0 first; none when ``tiles`` is False) and then the preview of
    ``HxWx3``/``HxWx4`` ``uint8`` pixels.

    Pieces are produced one level at a time; only the current level and the next are in memory
    besides ``pixels``.
    """
    return _pyramid(pixels, layout, halve_pixels, heatmap=False, tiles=tiles)


def heatmap_pyramid(
    indices: np.ndarray, layout: PyramidLayout, *, tiles: bool = True, tolerance_level: int = 0
) -> Iterator[PyramidPiece]:
    """Like :func:`pixel_pyramid` for ``HxW`` heatmap palette indices (levels reduced by
    :func:`halve_heatmap` with ``tolerance_level``, ``floor(tolerance * 255)``)."""
    return _pyramid(
        indices,
        layout,
        partial(halve_heatmap, tolerance_level=tolerance_level),
        heatmap=True,
        tiles=tiles,
    )


def _pyramid(
    image: np.ndarray,
    layout: PyramidLayout,
    halve: Callable[[np.ndarray], np.ndarray],
    *,
    heatmap: bool,
    tiles: bool,
) -> Iterator[PyramidPiece]:
    _check(image, layout)
    size = layout.tile_size
    for level in range(layout.top_level + 1):
        if level:
            image = halve(image)
        if level == layout.top_level:
            yield PyramidPiece(level, -1, -1, image, heatmap)
            return
        if not tiles:
            continue
        columns, rows = layout.grid(level)
        for row in range(rows):
            for column in range(columns):
                part = image[row * size : (row + 1) * size, column * size : (column + 1) * size]
                yield PyramidPiece(level, column, row, part, heatmap)


def read_heatmap_indices(png: bytes, *, max_pixels: int) -> np.ndarray:
    """The palette indices (``uint8`` ``HxW``; 0..254 levels, 255 grey) of a heatmap PNG.

    Raises
    ------
    ImagingError
        ``corrupt_image`` if it is not an 8-bit palette PNG; ``image_too_large`` over
        ``max_pixels``.
    """
    try:
        # The plugin class directly: PIL's decompression-bomb guard does not apply (our limit
        # is max_pixels, checked from the header before any pixel is decoded).
        image = PngImagePlugin.PngImageFile(io.BytesIO(png))
        if image.width * image.height > max_pixels:
            raise ImagingError(
                ErrorCode.IMAGE_TOO_LARGE, f"heatmap is {image.width}x{image.height} pixels"
            )
        if image.mode != "P":
            raise ImagingError(ErrorCode.CORRUPT_IMAGE, f"heatmap is mode {image.mode}, not P")
        return np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImagingError(ErrorCode.CORRUPT_IMAGE, f"not a heatmap PNG: {exc}") from exc
