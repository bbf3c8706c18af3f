"""Draw a difference map as a colour heatmap PNG (and a small preview of it).

Colour scale
------------
The colour of a pixel depends only on its difference level ``L`` (0..255, see ``diffmap``),
through the fraction ``d = L / 255``, interpolated linearly in RGB between
``HEATMAP_BREAKPOINTS``:

==========  ===============  ==========================================================
``d``       colour           what typically lands there
==========  ===============  ==========================================================
0           blue (0,0,255)   identical pixels: exactly pure blue, nothing else is
0 .. 0.05   blue -> green    noise: JPEG re-compression, resampling, dithering (1-13 levels)
0.05..0.15  green -> yellow  soft changes: a mild filter, a colour or brightness shift
0.15..0.30  yellow -> red    clear changes
>= 0.30     red (255,0,0)    content changes: a pasted, removed or repainted object
==========  ===============  ==========================================================

Most of the scale is spent on small differences on purpose: a re-saved JPEG differs by a few
levels almost everywhere and reads as a blue-green wash, while a pasted object differs by
tens of levels and reads red, so an edit stands out against compression noise at a glance. The
default noise tolerance (0.1, ``options.DEFAULT_TOLERANCE``) sits between green and
yellow, above the compression-noise band. Pixels that are not compared (outside the overlap of
the aligned images, or in an ignored rectangle) are drawn ``NEUTRAL_GREY``. Pixels above the
tolerance that the anti-aliasing detector explains (edge and glyph smoothing, resampling at
edges; ``core.imaging.noise``) are drawn ``ANTIALIAS_MAGENTA``: a colour outside the scale, so
they read as rendering noise, not as a change. ``core.imaging.legend`` draws the legend.

PNG encoding
------------
The heatmap has one byte per pixel: a palette index, written as an 8-bit palette PNG (colour
type 3), a third of the data of RGB. Index ``L`` is the colour of level ``L`` for ``L`` in
0..253 (levels 254 and 255 share index 253: all three are full red), index 254
(``ANTIALIAS_INDEX``) is ``ANTIALIAS_MAGENTA`` and index 255 (``GREY_INDEX``) is
``NEUTRAL_GREY``. The
PNG is written here directly (IHDR, PLTE, IDAT, IEND with ``zlib``) rather than through PIL or
OpenCV because the encoder is on the hot path of every comparison. Measured on the difference
map of a 1920x1080 photo and its quality-90 JPEG re-save (medians, 2 cores): PIL
``compress_level=1`` 21 ms and 697 kB; ``cv2.imencode`` with ``IMWRITE_PNG_STRATEGY_RLE`` 34 ms
and 537 kB; this writer about 12 ms and 645 kB.

How: no row filter (type 0) and ``zlib`` level 1. A strip in which at least half of the pixels
are unchanged uses the ``Z_RLE`` strategy (runs of level 0 compress to almost nothing); a strip
of dense noise has no runs to find and uses Huffman-only coding, ~15 % faster there and within
~10 % of the size. Horizontal strips of about 512 kB are compressed in parallel on a small
per-process thread pool (``zlib`` releases the GIL) and joined into one ``zlib`` stream with
sync flushes, the way ``pigz`` does. The strip layout and each strip's strategy depend only on
the difference map, never on the number of CPUs, so the same map always gives the same bytes.
"""

from __future__ import annotations

import math
import struct
import zlib
from functools import cache
from itertools import pairwise

import numpy as np

from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.parallel import parallel_map

#: The colour scale: ``(d, (r, g, b))`` pairs with ``d = level / 255`` increasing from 0. Colours
#: are interpolated linearly in RGB between neighbours; at and above the last ``d`` it is red.
HEATMAP_BREAKPOINTS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (0, 0, 255)),  # identical: pure blue
    (0.05, (0, 255, 0)),  # ~13/255: compression noise ends here
    (0.15, (255, 255, 0)),  # ~38/255
    (0.30, (255, 0, 0)),  # ~77/255 and above: a content change
)
#: Colour of pixels that are not compared (outside the overlap, or ignored), RGB.
NEUTRAL_GREY: tuple[int, int, int] = (128, 128, 128)
#: Colour of anti-aliased pixels (a difference the anti-aliasing detector explains), RGB.
ANTIALIAS_MAGENTA: tuple[int, int, int] = (255, 0, 255)
#: Palette index of ``NEUTRAL_GREY``; indices 0..``TOP_LEVEL_INDEX`` are difference levels.
GREY_INDEX = 255
#: Palette index of ``ANTIALIAS_MAGENTA``.
ANTIALIAS_INDEX = 254
#: The last level index: levels from here to 255 share it (full red).
TOP_LEVEL_INDEX = 253

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: zlib header for a deflate stream with a 32 KiB window, "fastest" compression level hint.
_ZLIB_HEADER = b"\x78\x01"
#: Target raw bytes per independently compressed strip (about 270 rows of a 1920-wide image).
_STRIP_BYTES = 512 * 1024
_MAX_STRIPS = 16


@cache
def _palette() -> np.ndarray:
    levels = np.arange(TOP_LEVEL_INDEX + 1, dtype=np.float64) / 255.0
    stops = np.array([d for d, _ in HEATMAP_BREAKPOINTS], dtype=np.float64)
    colours = np.array([c for _, c in HEATMAP_BREAKPOINTS], dtype=np.float64)
    palette = np.empty((256, 3), dtype=np.uint8)
    for channel in range(3):
        # np.interp holds the end values outside [0, last stop]: full red above 0.30.
        palette[: TOP_LEVEL_INDEX + 1, channel] = np.rint(
            np.interp(levels, stops, colours[:, channel])
        )
    palette[ANTIALIAS_INDEX] = ANTIALIAS_MAGENTA
    palette[GREY_INDEX] = NEUTRAL_GREY
    palette.setflags(write=False)
    return palette


def heatmap_palette() -> np.ndarray:
    """Return the heatmap palette as a read-only ``(256, 3)`` ``uint8`` RGB array.

    Entry ``L`` (0..253) is the colour of difference level ``L`` on ``HEATMAP_BREAKPOINTS``
    (levels 254 and 255 use entry 253, also full red); entry 254 is ``ANTIALIAS_MAGENTA`` and
    entry 255 ``NEUTRAL_GREY``. Built once.
    """
    return _palette()


def heatmap_indices(
    diff: np.ndarray, valid: np.ndarray | None, antialiased: np.ndarray | None = None
) -> np.ndarray:
    """Map a difference map to palette indices.

    Parameters
    ----------
    diff
        ``uint8`` ``HxW`` difference levels 0..255.
    valid
        ``bool`` ``HxW``, True where a pixel is compared, or None for every pixel.
    antialiased
        ``bool`` ``HxW``, True where the anti-aliasing detector explains the difference, or None.

    Returns
    -------
    numpy.ndarray
        New ``uint8`` ``HxW`` array: ``min(level, 253)`` where valid, 254 (magenta) where
        anti-aliased, 255 (grey) where not compared (grey wins over magenta).
    """
    _check_diff(diff)
    # NumPy rather than cv2 here: cv2 turns a Python number into a 4-element Scalar and then
    # mis-shapes the result of a 1x1 image. Both run at memory speed.
    indices = np.minimum(diff, np.uint8(TOP_LEVEL_INDEX))
    if antialiased is not None:
        np.copyto(indices, np.uint8(ANTIALIAS_INDEX), where=_check_mask(antialiased, diff.shape))
    if valid is not None:
        np.copyto(indices, np.uint8(GREY_INDEX), where=~_check_mask(valid, diff.shape))
    return indices


def render_heatmap(
    diff: np.ndarray, *, valid: np.ndarray | None = None, antialiased: np.ndarray | None = None
) -> bytes:
    """Encode the heatmap of ``diff`` as a palette PNG on A's pixel grid.

    Parameters
    ----------
    diff
        ``uint8`` ``HxW`` difference levels 0..255 (``diffmap.difference_map``).
    valid
        ``bool`` ``HxW`` compared-pixel mask, or None; other pixels are drawn grey.
    antialiased
        ``bool`` ``HxW`` anti-aliased-pixel mask, or None; those pixels are drawn magenta.

    Returns
    -------
    bytes
        A PNG of ``W x H`` pixels, 8-bit palette (colour type 3) with ``heatmap_palette()``,
        one byte per pixel. Deterministic: the same input always gives the same bytes.
    """
    return encode_palette_png(heatmap_indices(diff, valid, antialiased), heatmap_palette())


def render_preview(
    diff: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    max_side: int = 512,
    antialiased: np.ndarray | None = None,
    tolerance_level: int = 0,
) -> bytes:
    """Encode a downscaled heatmap PNG whose longest side is at most ``max_side`` pixels.

    The map is cut into ``f x f`` blocks, ``f = ceil(max(H, W) / max_side)`` (1 when the image
    already fits), and each block takes the largest difference level of its compared pixels, so
    a small strong edit stays visible (red) however far the image is reduced. A block is grey
    only when none of its pixels is compared. Anti-aliased pixels count as level 0, and a block
    holding one is magenta when no other pixel of it is above ``tolerance_level``: rendering
    noise never hides a change, and a change never hides in magenta. The preview is
    ``ceil(W / f) x ceil(H / f)``; with ``f = 1`` it equals ``render_heatmap``.

    Parameters
    ----------
    diff
        ``uint8`` ``HxW`` difference levels 0..255.
    valid
        ``bool`` ``HxW`` compared-pixel mask, or None for every pixel.
    max_side
        Longest side of the preview in pixels, >= 1.
    antialiased
        ``bool`` ``HxW`` anti-aliased-pixel mask, or None.
    tolerance_level
        Largest difference level (0..255) that is not a change: ``floor(tolerance * 255)``.

    Returns
    -------
    bytes
        An 8-bit palette PNG with ``heatmap_palette()``, like ``render_heatmap``.
    """
    _check_diff(diff)
    if max_side < 1:
        raise ImagingError(ErrorCode.INVALID_OPTIONS, f"max_side must be >= 1, not {max_side}")
    height, width = diff.shape
    factor = max(1, math.ceil(max(height, width) / max_side))
    if factor == 1:
        return render_heatmap(diff, valid=valid, antialiased=antialiased)
    # Code each pixel as level + 1 (1..254) where compared and 0 where not: the block maximum
    # then carries both the largest compared level and whether any pixel was compared.
    coded = np.minimum(diff, np.uint8(TOP_LEVEL_INDEX))
    coded += np.uint8(1)
    aa = None if antialiased is None else _check_mask(antialiased, diff.shape)
    if aa is not None:
        np.copyto(coded, np.uint8(1), where=aa)  # level 0: noise, not a change
    if valid is not None:
        coded *= _check_mask(valid, diff.shape)
    coded = _block_max(coded, factor)
    indices = coded - np.uint8(1)  # uint8 wrap-around: 0 (nothing compared) becomes 255, grey
    if aa is not None:
        if valid is not None:
            aa = aa & _check_mask(valid, diff.shape)
        aa_blocks = _block_max(aa.view(np.uint8), factor).astype(bool)
        np.copyto(
            indices,
            np.uint8(ANTIALIAS_INDEX),
            where=aa_blocks & (indices <= np.uint8(min(max(tolerance_level, 0), 253))),
        )
    return encode_palette_png(indices, heatmap_palette())


def _block_max(image: np.ndarray, factor: int) -> np.ndarray:
    """Maximum over ``factor x factor`` blocks; edge blocks are padded with 0."""
    height, width = image.shape
    out_h, out_w = -(-height // factor), -(-width // factor)
    if (out_h * factor, out_w * factor) != (height, width):
        padded = np.zeros((out_h * factor, out_w * factor), dtype=image.dtype)
        padded[:height, :width] = image
        image = padded
    # Rows: reduce the middle axis, whose inner axis is contiguous (vectorised).
    rows = image.reshape(out_h, factor, out_w * factor).max(axis=1)
    # Columns: one strided maximum per offset instead of a reduction over a tiny inner axis.
    out = np.ascontiguousarray(rows[:, 0::factor])
    for offset in range(1, factor):
        np.maximum(out, rows[:, offset::factor], out=out)
    return out


def heatmap_strips(height: int, width: int) -> list[int]:
    """Row boundaries ``[0, ..., height]`` of the strips a ``width x height`` heatmap PNG is
    compressed in (about ``_STRIP_BYTES`` of scanlines each, at most ``_MAX_STRIPS``); they
    depend only on the size, so that the same map always gives the same bytes."""
    row_bytes = width + 1
    strips = min(_MAX_STRIPS, max(1, -(-(height * row_bytes) // _STRIP_BYTES)), height)
    return [round(i * height / strips) for i in range(strips + 1)]


def deflate_strip(indices: np.ndarray, *, last: bool) -> tuple[bytes, int, int]:
    """Compress one strip of palette indices (``uint8`` rows) as PNG scanlines.

    Returns ``(deflated, adler32, raw_length)``: the raw-deflate data of the strip's
    scanlines (filter byte 0 then the row), ending on a byte boundary (sync flush) unless
    ``last``; the Adler-32 of the scanlines (from 1) and their length in bytes, for
    :func:`palette_png` to combine.
    """
    rows, width = indices.shape
    # Each scanline is a filter-type byte (0, none) followed by the row's indices.
    raw = np.empty((rows, width + 1), dtype=np.uint8)
    raw[:, 0] = 0
    raw[:, 1:] = indices
    data = raw.data.cast("B")
    # Runs of level 0 (unchanged pixels) suit Z_RLE; dense noise has no runs, and plain
    # Huffman coding is then ~15 % faster and no larger.
    mostly_unchanged = 2 * (indices.size - np.count_nonzero(indices)) >= indices.size
    strategy = zlib.Z_RLE if mostly_unchanged else zlib.Z_HUFFMAN_ONLY
    return _deflate_strip((data, strategy, last)), zlib.adler32(data), len(data)


def _deflate_strip(part: tuple[memoryview, int, bool]) -> bytes:
    """Raw-deflate one strip; all but the last end on a byte boundary (sync flush)."""
    data, strategy, last = part
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15, 9, strategy)
    return compressor.compress(data) + compressor.flush(
        zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
    )


def palette_png(
    width: int, height: int, strips: list[tuple[bytes, int, int]], palette: np.ndarray
) -> bytes:
    """Join the :func:`deflate_strip` results of consecutive strips (top to bottom) into an
    8-bit palette PNG of ``width x height`` with ``palette`` (Nx3 ``uint8``)."""
    checksum = 1
    for _, adler, length in strips:
        checksum = _adler32_combine(checksum, adler, length)
    idat = b"".join([_ZLIB_HEADER, *(s[0] for s in strips), struct.pack(">I", checksum)])
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return b"".join(
        [
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"PLTE", np.ascontiguousarray(palette, dtype=np.uint8).tobytes()),
            _chunk(b"IDAT", idat),
            _chunk(b"IEND", b""),
        ]
    )


_ADLER_BASE = 65521


def _adler32_combine(adler1: int, adler2: int, length2: int) -> int:
    """Adler-32 of ``data1 + data2`` from the checksums of both and ``len(data2)`` (zlib's
    ``adler32_combine``, which Python's ``zlib`` does not expose)."""
    rem = length2 % _ADLER_BASE
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % _ADLER_BASE
    sum1 = (sum1 + (adler2 & 0xFFFF) + _ADLER_BASE - 1) % _ADLER_BASE
    sum2 = (sum2 + (adler1 >> 16) + (adler2 >> 16) + _ADLER_BASE - rem) % _ADLER_BASE
    return sum1 | (sum2 << 16)


def encode_palette_png(indices: np.ndarray, palette: np.ndarray) -> bytes:
    """Write ``indices`` (``uint8`` ``HxW``) as an 8-bit palette PNG with ``palette`` (Nx3)."""
    height, width = indices.shape
    rows = heatmap_strips(height, width)
    blocks = [(indices[r0:r1], r1 == height) for r0, r1 in pairwise(rows)]
    compressed = parallel_map(lambda block: deflate_strip(block[0], last=block[1]), blocks)
    return palette_png(width, height, compressed, palette)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _check_diff(diff: np.ndarray) -> None:
    if diff.dtype != np.uint8 or diff.ndim != 2:
        raise ImagingError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"a difference map is a uint8 HxW array, got {diff.dtype} {diff.shape}",
        )
    if diff.size == 0:
        raise ImagingError(ErrorCode.UNSUPPORTED_FORMAT, "the difference map is empty")


def _check_mask(valid: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if valid.shape != shape:
        raise ImagingError(
            ErrorCode.SIZE_MISMATCH,
            f"valid mask shape {valid.shape} does not match the difference map {shape}",
        )
    if valid.dtype != np.bool_:
        raise ImagingError(
            ErrorCode.UNSUPPORTED_FORMAT, f"the valid mask must be bool, got {valid.dtype}"
        )
    return valid
