"""Structural checks of an encoded image, cheap enough to run at upload, before any job exists.

``read_header`` proves a file *starts* like an image; these checks catch files that fail only
once decoded, without decoding pixels into memory:

PNG
    Every chunk lies inside the file; ``IHDR`` comes first; the ``IDAT`` chunks exist and are
    consecutive. A missing ``IDAT``, or one cut short, is refused. With ``inflate=True`` also
    every CRC, and the zlib stream must inflate (in 1 MiB pieces, nothing kept) to at least the
    bytes the image's rows need (about 1 s for a 100 megapixel 16-bit RGBA PNG); not used at
    upload yet, since damaged-but-well-framed pixel data is the worker's to find.
JPEG
    A Huffman-coded JPEG spends at least one bit on every 8x8 block of its largest component,
    so a file shorter than ``ceil(W/8) * ceil(H/8) / 8`` bytes cannot hold the image its frame
    header declares (a 632-byte file claiming 10000x10000 is a truncated file that decoders
    would fill with grey). Arithmetic-coded JPEGs are not bounded this way and are not checked.
TIFF
    The first image's strips (or tiles) have offsets and byte counts, all inside the file.
GIF
    The blocks are walked (no LZW decoding): every image descriptor must fit the logical
    screen (GIF89a: "each image must fit within the boundaries of the Logical Screen"), so a
    small file cannot grow its canvas to thousands of pixels per frame; the first image's
    data must be complete.

Every refusal is ``corrupt_image`` with a one-line reason. Pure: arguments in, no settings read.
"""

from __future__ import annotations

import io
import math
import mmap
import struct
import zlib
from typing import IO, cast

from PIL import TiffImagePlugin

from core.imaging.errors import ErrorCode, ImagingError

__all__ = ["check_structure"]

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: (x start, y start, x step, y step).
_ADAM7: tuple[tuple[int, int, int, int], ...] = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_INFLATE_PIECE = 1 << 20
_HUFFMAN_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})


def check_structure(data: bytes | mmap.mmap, fmt: str, *, inflate: bool = False) -> None:
    """Check the structure of an image file whose header was already read.

    Parameters
    ----------
    data
        The encoded file.
    fmt
        Its format as ``read_header`` reports it (``png``, ``jpeg``, ``tiff``, ``gif``, ...);
        other formats pass unchecked.
    inflate
        PNG only: also check the CRCs and inflate the image data to prove it is complete
        (linear in the decoded size); off (the default), only the chunk layout is checked.

    Raises
    ------
    ImagingError
        ``corrupt_image``, naming what is wrong.
    """
    if fmt == "png":
        _check_png(data, inflate=inflate)
    elif fmt == "jpeg":
        _check_jpeg(data)
    elif fmt == "tiff":
        _check_tiff(data)
    elif fmt == "gif":
        _check_gif(data)


def _corrupt(message: str) -> ImagingError:
    return ImagingError(ErrorCode.CORRUPT_IMAGE, message)


# ---------------------------------------------------------------------------------------------
# PNG


def _png_row_bytes(width: int, channels: int, depth: int) -> int:
    return math.ceil(width * channels * depth / 8)


def _png_raw_size(width: int, height: int, channels: int, depth: int, interlaced: bool) -> int:
    """Bytes of the filtered scanlines (one filter byte per row) the IDAT stream must hold."""
    if not interlaced:
        return height * (1 + _png_row_bytes(width, channels, depth))
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        pass_w = max(0, (width - x0 + dx - 1) // dx)
        pass_h = max(0, (height - y0 + dy - 1) // dy)
        if pass_w and pass_h:
            total += pass_h * (1 + _png_row_bytes(pass_w, channels, depth))
    return total


def _check_png(data: bytes | mmap.mmap, *, inflate: bool) -> None:
    pos, size = 8, len(data)
    idat: list[memoryview] = []
    view = memoryview(data)
    ihdr: bytes | None = None
    idat_ended = False
    while pos + 12 <= size:
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > size:
            raise _corrupt(f"truncated png: chunk {kind!r} at byte {pos} runs past the file end")
        crc = int.from_bytes(data[end - 4 : end], "big")
        if inflate and zlib.crc32(view[pos + 4 : end - 4]) != crc:
            raise _corrupt(f"corrupt png: bad CRC in chunk {kind.decode('latin-1')!r}")
        if ihdr is None:
            if kind != b"IHDR" or length != 13:
                raise _corrupt("corrupt png: the first chunk is not IHDR")
            ihdr = data[pos + 8 : pos + 21]
        elif kind == b"IDAT":
            if idat_ended:
                raise _corrupt("corrupt png: IDAT chunks are not consecutive")
            idat.append(view[pos + 8 : end - 4])
        elif idat:
            idat_ended = True
        if kind == b"IEND":
            break
        pos = end
    if ihdr is None:
        raise _corrupt("corrupt png: no IHDR chunk")
    if not idat:
        raise _corrupt("corrupt png: no image data (IDAT chunk)")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    channels = _PNG_CHANNELS.get(colour)
    if channels is None:
        raise _corrupt(f"corrupt png: unknown colour type {colour}")
    if inflate:
        need = _png_raw_size(width, height, channels, depth, interlace == 1)
        got = _inflated_size(idat, need)
        if got < need:
            raise _corrupt(
                f"truncated png: the image data holds {got} of the {need} bytes its "
                f"{width}x{height} rows need"
            )


def _inflated_size(pieces: list[memoryview], need: int) -> int:
    """Bytes the zlib stream in ``pieces`` inflates to, counting up to ``need`` (nothing kept)."""
    inflater = zlib.decompressobj()
    got = 0
    try:
        for piece in pieces:
            pending: bytes | memoryview = piece
            while pending and got < need:
                got += len(inflater.decompress(pending, _INFLATE_PIECE))
                pending = inflater.unconsumed_tail
            if got >= need or inflater.eof:
                return got
        while got < need:  # flush what the inflater still holds
            out = inflater.decompress(inflater.unconsumed_tail, _INFLATE_PIECE)
            if not out:
                break
            got += len(out)
    except zlib.error as exc:
        raise _corrupt(f"corrupt png: the image data does not inflate ({exc})") from exc
    return got


# ---------------------------------------------------------------------------------------------
# JPEG


def _jpeg_frame(data: bytes | mmap.mmap) -> tuple[int, int, int] | None:
    """``(marker, width, height)`` of the first SOF segment, or None if there is none."""
    pos, size = 2, len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            return None
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > size:
                return None
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return marker, width, height
        if length < 2:
            return None
        pos += 2 + length
    return None


def _check_jpeg(data: bytes | mmap.mmap) -> None:
    frame = _jpeg_frame(data)
    if frame is None:
        raise _corrupt("corrupt jpeg: no frame header before the image data")
    marker, width, height = frame
    if marker not in _HUFFMAN_SOF:
        return
    blocks = math.ceil(width / 8) * math.ceil(height / 8)
    least = math.ceil(blocks / 8)
    if len(data) < least:
        raise _corrupt(
            f"truncated jpeg: {len(data)} bytes cannot hold the {width}x{height} image its "
            f"header declares (at least {least} bytes: one bit per 8x8 block)"
        )


# ---------------------------------------------------------------------------------------------
# TIFF


def _check_tiff(data: bytes | mmap.mmap) -> None:
    try:
        if isinstance(data, mmap.mmap):
            data.seek(0)
        file = cast(IO[bytes], data) if isinstance(data, mmap.mmap) else io.BytesIO(data)
        image = TiffImagePlugin.TiffImageFile(file)
        tags = image.tag_v2
        offsets = tags.get(273) or tags.get(324)
        counts = tags.get(279) or tags.get(325)
    except Exception as exc:
        raise _corrupt(f"corrupt tiff: {str(exc)[:200] or type(exc).__name__}") from exc
    if not offsets or not counts:
        raise _corrupt("corrupt tiff: no strip or tile offsets for the image data")
    offsets = offsets if isinstance(offsets, tuple) else (offsets,)
    counts = counts if isinstance(counts, tuple) else (counts,)
    if len(offsets) != len(counts):
        raise _corrupt("corrupt tiff: strip offsets and byte counts differ in number")
    size = len(data)
    for index, (offset, count) in enumerate(zip(offsets, counts, strict=True)):
        if int(offset) < 0 or int(count) < 0 or int(offset) + int(count) > size:
            raise _corrupt(
                f"corrupt tiff: strip {index} ({count} bytes at offset {offset}) lies outside "
                f"the {size}-byte file"
            )


# ---------------------------------------------------------------------------------------------
# GIF


def _skip_sub_blocks(data: bytes | mmap.mmap, pos: int) -> int:
    """Position after a chain of data sub-blocks; -1 when the file ends first."""
    size = len(data)
    while pos < size:
        length = data[pos]
        pos += 1 + length
        if length == 0:
            return pos if pos <= size else -1
    return -1


def _check_gif(data: bytes | mmap.mmap) -> None:
    size = len(data)
    if size < 13:
        raise _corrupt("truncated gif: no logical screen descriptor")
    screen_w, screen_h, flags = struct.unpack("<HHB", data[6:11])
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = 0
    while pos < size:
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor
            if pos + 10 > size:
                pos = -1
            else:
                left, top, w, h, local = struct.unpack("<HHHHB", data[pos + 1 : pos + 10])
                if left + w > screen_w or top + h > screen_h:
                    raise _corrupt(
                        f"corrupt gif: frame {frames} ({w}x{h} at {left},{top}) does not fit "
                        f"the {screen_w}x{screen_h} logical screen"
                    )
                pos += 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0)
                pos = _skip_sub_blocks(data, pos + 1) if pos < size else -1  # LZW code size
                if pos >= 0:
                    frames += 1
        else:
            if frames:  # junk after complete frames: decoders stop here too
                break
            raise _corrupt(f"corrupt gif: unknown block 0x{block:02x} at byte {pos}")
        if pos < 0:
            if frames:
                break  # a later frame is cut off; the first one (what is compared) is whole
            raise _corrupt("truncated gif: the first image's data is incomplete")
    if frames == 0:
        raise _corrupt("corrupt gif: no image in the file")
