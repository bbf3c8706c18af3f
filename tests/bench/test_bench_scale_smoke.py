"""Smoke tests of the scale benchmark: its pages, its process measurements and its output.

Speed is never asserted (the machine is shared): these prove the benchmark runs end to end and
that what it reports is well-formed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench import bench_scale as bs


def test_page_pair_is_seeded_and_edited_locally() -> None:
    a, b = bs.page_pair(400, 900, seed=5)
    a2, b2 = bs.page_pair(400, 900, seed=5)
    assert a.shape == b.shape == (900, 400, 3) and a.dtype == np.uint8
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    changed = np.any(a != b, axis=2)
    assert 0 < np.count_nonzero(changed) < 0.2 * changed.size
    # A page: mostly white, with drawn content.
    assert 0.3 < np.mean(np.all(a == 255, axis=2)) < 0.99


def test_wide_page_repeats_its_column() -> None:
    page = bs.drawn_page(2500, 300, seed=1)
    assert page.shape == (300, 2500, 3)
    np.testing.assert_array_equal(page[:, 1920:], page[:, : 2500 - 1920])


def test_parse_sizes() -> None:
    assert bs.parse_sizes("2mp, 37MP,64x32") == [
        ("2mp", 1920, 1080),
        ("37mp", 3446, 10728),
        ("64x32", 64, 32),
    ]
    with pytest.raises(ValueError):
        bs.parse_sizes("huge")
    with pytest.raises(ValueError):
        bs.parse_sizes("8x8")


def test_run_process_reports_wall_rss_and_last_line() -> None:
    run = bs.run_process([sys.executable, "-c", "x = bytearray(64 << 20); print(0.25)"])
    assert run.inner_s == 0.25 and run.wall_s > 0
    assert run.rss_mib >= 64
    with pytest.raises(RuntimeError):
        bs.run_process([sys.executable, "-c", "raise SystemExit(3)"])


def test_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    code = bs.main(
        ["--sizes", "96x160", "--repeat", "1", "--json", str(out), "--odiff-dir", str(tmp_path)]
    )
    assert code == 0
    figures = json.loads(out.read_text())
    (row,) = figures["summary"]
    assert row["size"] == "96x160"
    for key in ("ours_wall_s", "ours_engine_s", "whole_wall_s", "decode_s", "ours_ms_per_mp"):
        assert row[key] > 0
    assert row["ours_rss_mib"] > row["decode_rss_mib"] > 0
    (pair,) = figures["pairs"]
    assert set(pair["runs"]) >= {"ours", "ours_whole", "decode"}


def test_heatmap_written_by_the_child_is_a_png(tmp_path: Path) -> None:
    a, b = bs.page_pair(64, 48, seed=2)
    pa, pb = bs._write_pair(tmp_path, "t", a, b)
    report = bs.measure_pair("t", pa, pb, repeat=1, odiff=None, whole=False, out_dir=tmp_path)
    assert (report.width, report.height) == (64, 48)
    heat = cv2.imread(str(tmp_path / "t-heatmap.png"), cv2.IMREAD_UNCHANGED)
    assert heat is not None and heat.shape[:2] == (48, 64)
