"""Helpers of the end-to-end tests: the live stack's handle, test images, and the engine's own
result to compare with."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from core.imaging import CompareOptions, compare
from diffall.client import DiffallClient
from tests.core.imaging.photos import paste_patch, photo, png
from tests.e2e.procs import Service

#: Seconds a comparison may take from submission to a final state here.
JOB_TIMEOUT_S = 45.0


@dataclass
class Stack:
    """The live stack of tests/e2e/conftest.py: where the API is, a key, its processes."""

    base_url: str
    key: str
    services: list[Service]

    def client(self, key: str | None = None) -> DiffallClient:
        return DiffallClient(self.base_url, key or self.key, timeout=20.0)


def corrupt_png(data: bytes, *, seed: int = 0) -> bytes:
    """``data`` (a PNG) with garbage in its pixel data: the header and chunk structure (CRCs
    included) stay valid, so it passes header validation and fails only when decoded."""
    start = data.index(b"IDAT")
    length = struct.unpack(">I", data[start - 4 : start])[0]
    payload = bytearray(data[start + 4 : start + 4 + length])
    rng = np.random.default_rng(seed)
    payload[10:200] = rng.integers(0, 256, 190, dtype=np.uint8).tobytes()
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(payload)) & 0xFFFFFFFF)
    return data[: start + 4] + bytes(payload) + crc + data[start + 8 + length :]


def edited_pair(width: int, height: int, *, seed: int) -> tuple[bytes, bytes]:
    """PNGs of a photo A and of A with one pasted patch (a localised edit)."""
    a = photo(width, height, seed=seed)
    rect = (width // 4 + seed % 7, height // 3, width // 5, height // 5)
    return png(a), png(paste_patch(a, rect, seed=seed))


def expected_result(a: bytes, b: bytes, **options: Any) -> dict[str, Any]:
    """What the engine computes here for the same bytes (timings left out)."""
    result = compare(a, b, CompareOptions(**options)).to_dict()
    result.pop("timings_ms")
    return result


def assert_close(got: Any, want: Any, where: str = "result") -> None:
    """Equal JSON values, floats within 1e-12 relative (they went through JSON and the DB)."""
    if isinstance(want, float) and isinstance(got, int | float):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12), where
    elif isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list | tuple):
        assert isinstance(got, list) and len(got) == len(want), where
        for index, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{where}[{index}]")
    else:
        assert got == want, where


def assert_same_scores(got: dict[str, Any], want: dict[str, Any]) -> None:
    """The service's result is the engine's: scores, verdict, regions and everything else."""
    for key in ("ssim", "psnr", "verdict", "regions"):
        assert_close(got[key], want[key], key)
    assert_close({k: v for k, v in got.items() if k != "timings_ms"}, want)
