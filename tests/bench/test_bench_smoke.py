"""Smoke tests of the engine benchmark: it runs end to end on a tiny size.

Speed is never asserted here (the machine is shared and timings are noisy); these tests prove that
the benchmark's images, reference, tool discovery, target logic and output work.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from bench import bench_engine as be
from bench.images import (
    pasted_patch_box,
    photographic,
    photographic_pair,
    png_bytes,
    rotated,
    rotation_matrix,
    write_png,
)
from bench.lib import engine_rows, timing
from bench.lib import tools as external_tools

W, H = 320, 180


def test_photographic_pair_is_seeded_and_looks_like_a_revision() -> None:
    a, b = photographic_pair(W, H, seed=3)
    assert a.shape == b.shape == (H, W, 3)
    assert a.dtype == b.dtype == np.uint8
    a2, b2 = photographic_pair(W, H, seed=3)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    assert not np.array_equal(a, photographic(W, H, seed=4))
    # The difference is concentrated in the pasted patch, thin (JPEG) everywhere else.
    diff = np.abs(a.astype(np.int16) - b).max(axis=2)
    x, y, pw, ph = pasted_patch_box(W, H, seed=3)
    inside = np.zeros(diff.shape, bool)
    inside[y : y + ph, x : x + pw] = True
    assert 0 < diff[~inside].mean() < 10
    assert diff[inside].mean() > 3 * diff[~inside].mean()
    assert np.count_nonzero(diff[~inside]) > 0.3 * np.count_nonzero(~inside)


def test_photographic_image_has_photo_like_texture() -> None:
    a = photographic(W, H, seed=1)
    # Grain: neighbouring pixels differ, as in a photograph (not flat synthetic colour).
    assert np.mean(a[:, 1:] != a[:, :-1]) > 0.5
    # It compresses like a photo: PNG is not much smaller than the raw pixels.
    assert len(png_bytes(a)) > 0.3 * a.nbytes


def test_rotated_follows_its_matrix() -> None:
    img = np.zeros((H, W), np.uint8)
    img[40:44, 250:254] = 255  # a small bright square away from the centre
    out = rotated(img, 5.0, 1.05)
    assert out.shape == img.shape and out.dtype == img.dtype
    m = rotation_matrix(W, H, 5.0, 1.05)
    expected = m @ np.array([251.5, 41.5, 1.0])
    ys, xs = np.nonzero(out > 128)
    assert abs(xs.mean() - expected[0]) < 1.0 and abs(ys.mean() - expected[1]) < 1.0
    assert np.array_equal(rotated(img, 0.0, 1.0), img)


def test_write_png_round_trips_rgb(tmp_path: Path) -> None:
    a = photographic(W, H, seed=2)
    path = tmp_path / "a.png"
    write_png(path, a)
    # Read back by an independent decoder (PIL), which returns RGB order.
    assert np.array_equal(np.asarray(Image.open(path)), a)


def test_reference_matches_scikit_image_and_draws_its_colour_scale() -> None:
    a, b = photographic_pair(W, H, seed=5)
    out = engine_rows.reference(png_bytes(a), png_bytes(b))
    expected = structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=-1,
    )
    assert out.ssim == pytest.approx(expected, abs=1e-12)
    assert out.psnr == pytest.approx(cv2.PSNR(a, b), abs=1e-6)  # OpenCV as the independent PSNR
    heat = np.asarray(Image.open(io.BytesIO(out.heatmap_png)))
    lut = engine_rows.reference_colour_lut()
    diff = np.abs(a.astype(np.int16) - b).max(axis=2)
    assert np.array_equal(heat, lut[diff])
    assert tuple(lut[0]) == (0, 0, 255) and tuple(lut[32]) == (0, 255, 0)
    assert tuple(lut[255]) == (255, 0, 0)
    same = engine_rows.reference(png_bytes(a), png_bytes(a))
    assert same.ssim == pytest.approx(1.0) and same.psnr == float("inf")


def test_decode_floor_decodes_both() -> None:
    a, b = photographic_pair(W, H, seed=6)
    da, db = engine_rows.decode_floor(png_bytes(a), png_bytes(b))
    assert np.array_equal(da[..., ::-1], a) and np.array_equal(db[..., ::-1], b)


def test_round_robin_runs_each_row_repeat_plus_warmup_times() -> None:
    calls = {"x": 0, "y": 0}

    def bump(name: str) -> None:
        calls[name] += 1

    timings = timing.time_round_robin(
        {"x": lambda: bump("x"), "y": lambda: bump("y")}, repeat=3, warmup=1
    )
    assert calls == {"x": 4, "y": 4}
    assert len(timings["x"].runs_ms) == 3
    assert timings["x"].min_ms <= timings["x"].median_ms


def test_parse_sizes() -> None:
    assert be.parse_sizes("1080p,4k") == [(1920, 1080), (3840, 2160)]
    assert be.parse_sizes("320x180") == [(320, 180)]
    for bad in ("huge", "8x8", ""):
        with pytest.raises(ValueError):
            be.parse_sizes(bad)
    assert be.default_repeat(1920, 1080) == 7 and be.default_repeat(3840, 2160) == 3


def _report(size: tuple[int, int], medians: dict[str, float], rss: float | None) -> be.SizeReport:
    return be.SizeReport(
        width=size[0],
        height=size[1],
        repeat=1,
        file_bytes={},
        timings={k: timing.Timing([v]) for k, v in medians.items()},
        stage_ms={},
        startup_ms={},
        rss_baseline_mb=None if rss is None else rss / 2,
        rss_peak_mb=rss,
        checks={},
        notes=[],
    )


def test_targets_pass_fail_info_and_missing_rows() -> None:
    good = {"a": 100.0, "b": 200.0, "c": 1500.0, "d": 500.0, "odiff": 250.0}
    bad = {"a": 100.0, "b": 300.0, "c": 1000.0, "d": 1000.0, "odiff": 250.0}
    rows = be.evaluate_targets(
        [
            _report((1920, 1080), good, 300.0),
            _report((3840, 2160), bad, 700.0),
            _report((1920, 1080), {"a": 100.0, "b": 300.0, "c": 1000.0, "d": 1000.0}, None),
        ]
    )
    by = [(r.name.split(":")[0], r.status) for r in rows]
    assert by[:5] == [
        ("(b)/(a)", "PASS"),
        ("(c)/(b)", "PASS"),
        ("(b)/odiff", "PASS"),
        ("(d)/(b)", "PASS"),
        ("peak RSS of (b)", "info"),
    ]
    assert [s for _, s in by[5:10]] == ["info", "info", "info", "info", "FAIL"]
    assert [s for _, s in by[10:]] == ["FAIL", "FAIL", "n/a", "FAIL", "n/a"]
    assert rows[0].value == pytest.approx(2.0)


def test_odiff_is_skipped_when_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert external_tools.find_odiff(tmp_path) == []


def test_odiff_found_in_node_modules_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    binary = tmp_path / "node_modules" / ".bin" / "odiff"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"\x7fELF fake native binary")
    os.chmod(binary, 0o755)
    tools = external_tools.find_odiff(tmp_path)
    assert [t.row for t in tools] == [external_tools.ROW_ODIFF]
    assert tools[0].command(Path("a.png"), Path("b.png"), Path("d.png"))[1:] == [
        "a.png",
        "b.png",
        "d.png",
    ]


# ---- needs core.imaging.compare --------------------------------------------------------------


def test_benchmark_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert be.main(["--sizes", f"{W}x{H}", "--repeat", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(b) ours, pixel mode" in printed and "cv2 threads" in printed
    figures = json.loads(out.read_text())
    assert figures["machine"]["cpu_count"] == os.cpu_count()
    (size,) = figures["sizes"]
    assert (size["width"], size["height"]) == (W, H)
    for row in ("a", "b", "c", "d"):
        assert len(size["rows"][row]["runs_ms"]) == 1
        assert size["rows"][row]["median_ms"] > 0
    # Our SSIM agrees with scikit-image on the benchmark's own pair.
    assert size["checks"]["ssim_abs_diff"] < 1e-4
    assert size["checks"]["ours_heatmap_bytes"] > 0
    # At 320x180 the import itself can be the peak, so only ">=" holds.
    assert size["rss_peak_mb"] >= size["rss_baseline_mb"] > 0
    assert "total" in size["ours_pixel_stage_median_ms"]
    # A tiny size is never judged against the 1080p / 4K targets.
    assert {t["status"] for t in figures["targets"]} <= {"info", "n/a"}
