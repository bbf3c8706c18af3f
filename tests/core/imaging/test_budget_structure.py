"""The memory budget (core.imaging.budget) and structural checks (core.imaging.structure)."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from core.imaging import CompareOptions, ErrorCode, ImagingError, compare
from core.imaging.budget import check_budget, footprint
from core.imaging.header import read_header
from core.imaging.structure import check_structure


def _png(width: int = 32, height: int = 24) -> bytes:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _tiny_jpeg_claiming(width: int, height: int) -> bytes:
    """A real 8x8 JPEG whose frame header is rewritten to claim ``width x height``."""
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_footprint_uses_the_working_format_of_the_pair() -> None:
    a = read_header(_png(10, 10))
    pair = footprint(a)
    assert (pair.pixels, pair.channels, pair.bytes_per_sample) == (200, 3, 1)
    assert pair.decoded_bytes == 600
    rgba16 = cv2.imencode(".png", np.zeros((10, 10, 4), np.uint16))[1].tobytes()
    mixed = footprint(a, read_header(rgba16))
    assert (mixed.channels, mixed.bytes_per_sample, mixed.decoded_bytes) == (4, 2, 1600)


def test_over_budget_is_image_too_large_with_the_budget_in_the_message() -> None:
    pair = footprint(read_header(_png(100, 100)))
    check_budget(pair, pair.peak_bytes())  # exactly at the budget passes
    with pytest.raises(ImagingError) as caught:
        check_budget(pair, pair.peak_bytes() - 1)
    assert caught.value.code is ErrorCode.IMAGE_TOO_LARGE
    assert "per-job budget of" in caught.value.message


def test_a_short_jpeg_claiming_10000x10000_is_refused_before_decoding() -> None:
    data = _tiny_jpeg_claiming(10000, 10000)
    assert len(data) < 1000
    assert read_header(data).width == 10000  # the header alone looks fine
    with pytest.raises(ImagingError) as caught:
        check_structure(data, "jpeg")
    assert caught.value.code is ErrorCode.CORRUPT_IMAGE
    with pytest.raises(ImagingError) as in_engine:
        compare(data, data, CompareOptions(max_job_bytes=2**40))
    assert in_engine.value.code is ErrorCode.CORRUPT_IMAGE and in_engine.value.image == "a"


def test_a_png_without_image_data_is_refused() -> None:
    data = _png()
    ihdr_end = 8 + 25
    no_idat = data[:ihdr_end] + _chunk(b"IEND", b"")
    read_header(no_idat)
    with pytest.raises(ImagingError, match="no image data"):
        check_structure(no_idat, "png")
    check_structure(data, "png", inflate=True)


def test_a_truncated_idat_is_refused() -> None:
    data = _png()
    start = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    payload = data[start + 8 : start + 8 + length]
    # Chunk length cut short with the IEND kept: the chunk now runs past nothing but framing.
    cut = data[:start] + _chunk(b"IDAT", payload[: length // 2]) + _chunk(b"IEND", b"")
    check_structure(cut, "png")  # well framed: only inflating tells
    with pytest.raises(ImagingError, match="truncated png"):
        check_structure(cut, "png", inflate=True)
    broken = data[:start] + struct.pack(">I", length * 4) + data[start + 4 :]
    with pytest.raises(ImagingError, match="runs past the file end"):
        check_structure(broken, "png")


def test_a_tiff_strip_outside_the_file_is_refused() -> None:
    ok, encoded = cv2.imencode(".tiff", np.zeros((16, 16, 3), np.uint8))
    assert ok
    data = bytearray(encoded.tobytes())
    check_structure(bytes(data), "tiff")
    # Point every StripOffsets value past the end of the file.
    count = struct.unpack("<H", data[struct.unpack("<I", data[4:8])[0] :][:2])[0]
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, kind, n = struct.unpack("<HHI", data[entry : entry + 8])
        if tag == 273 and n == 1:
            fmt = "<I" if kind == 4 else "<H"
            size = struct.calcsize(fmt)
            data[entry + 8 : entry + 8 + size] = struct.pack(fmt, min(len(data) * 10, 65535))
    with pytest.raises(ImagingError, match="outside"):
        check_structure(bytes(data), "tiff")


def test_a_gif_frame_outside_its_screen_is_refused() -> None:
    header = b"GIF89a" + struct.pack("<HHBBB", 4, 4, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 9000, 9000, 0) + b"\x02\x02\x44\x01\x00"
    with pytest.raises(ImagingError, match="does not fit"):
        check_structure(header + frame + b"\x3b", "gif")
    small = b"\x2c" + struct.pack("<HHHHB", 0, 0, 4, 4, 0) + b"\x02\x02\x44\x01\x00"
    check_structure(header + small + b"\x3b", "gif")
