"""Smoke tests of the memory benchmark: its sizes, and one tiny job run end to end in a fresh
child process. Memory and speed are never asserted against targets here (the machine is
shared): these prove the benchmark runs and that what it reports is well-formed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_memory as bm


def test_parse_sizes() -> None:
    (name, width, height), small = bm.parse_sizes("10mp, 64x48")
    assert name == "10mp" and width * height <= 10_000_000 and width * height > 9_990_000
    assert abs(width / height - 4 / 3) < 0.01
    assert small == ("64x48", 64, 48)
    (_, width, height) = bm.parse_sizes("100mp")[0]
    assert width * height <= 100_000_000  # within limits.max_pixels
    for bad in ("huge", "8x8", ""):
        with pytest.raises(ValueError):
            bm.parse_sizes(bad)


def test_benchmark_runs_one_job_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "memory.json"
    assert bm.main(["--sizes", "96x64", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert (row["size"], row["width"], row["height"]) == ("96x64", 96, 64)
    assert row["state"] == "succeeded" and row["error_code"] is None
    assert row["decoded_bytes"] == 96 * 64 * 3 * 2
    # The child's own peak: at least its baseline, and a Python process with numpy and OpenCV.
    assert row["peak_rss_bytes"] >= row["baseline_rss_bytes"] > 20_000_000
    assert row["ratio"] == pytest.approx(row["peak_rss_bytes"] / row["decoded_bytes"])
    table = capsys.readouterr().out
    assert "| 96x64 | 96x64 |" in table and "peak / decoded" in table
