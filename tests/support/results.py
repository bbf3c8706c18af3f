"""The engine's own result for a pair, and the comparison of a service's result with it (floats
within 1e-12: they went through JSON and the database)."""

from __future__ import annotations

from typing import Any

import pytest

from core.imaging import CompareOptions, compare

__all__ = ["assert_close", "assert_same_scores", "expected_result"]


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
