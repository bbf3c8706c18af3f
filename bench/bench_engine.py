"""Benchmark of the comparison engine against decoding, a plain reference and other tools.

Run from the repository root::

    .venv/bin/python -m bench.bench_engine [--repeat N] [--sizes 1080p,4k] [--json OUT]

For each size it generates a photographic PNG pair (see :mod:`bench.images`) and a rotated pair,
then times, round-robin so that a load spike on a shared machine hits every row alike:

(a) decoding the two PNGs with ``cv2.imdecode(IMREAD_UNCHANGED)``: the floor;
(b) our pixel-mode ``compare``, bytes in, result dict and heatmap PNG out;
(c) a plain reference with PIL + scikit-image (decode, SSIM, PSNR, numpy heatmap, PIL PNG);
(d) our auto-mode ``compare`` on the rotated pair;
(e) where installed, the odiff and ImageMagick ``compare`` command lines on the same PNG files,
    timed as subprocesses (their start-up, measured on 1x1 images, is reported separately);

plus the peak RSS of (b) in a fresh child process. Each figure is the median (and minimum) of
``repeat`` runs after one warm-up run. Targets are those of the engine's issue; see
``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.images import photographic_pair, rotated, write_png
from bench.lib.engine_rows import EngineOutput, decode_floor, ours, reference
from bench.lib.peak_rss import child_peak_rss_mb
from bench.lib.timing import Timing, time_once, time_round_robin
from bench.lib.tools import (
    ROW_MAGICK,
    ROW_ODIFF,
    ROW_ODIFF_COMMAND,
    ExternalTool,
    find_external_tools,
    machine_info,
)

#: Named sizes accepted by ``--sizes`` (``WxH`` is accepted too), in pixels.
NAMED_SIZES: dict[str, tuple[int, int]] = {
    "720p": (1280, 720),
    "1080p": (1920, 1080),
    "1440p": (2560, 1440),
    "4k": (3840, 2160),
    "2160p": (3840, 2160),
}
#: Default runs per row (after one warm-up) for sizes up to 1080p, and above it.
DEFAULT_REPEAT_SMALL = 7
DEFAULT_REPEAT_LARGE = 3
#: Seed of the generated pairs.
DEFAULT_SEED = 2024
#: The rotated pair of row (d): B = A rotated by this many degrees and scaled about the centre.
ROTATION_DEGREES = 5.0
ROTATION_SCALE = 1.05

#: Targets, from the engine's issue. Ratio targets apply to 1920x1080, the RSS target to 4K.
TARGET_SIZE = (1920, 1080)
RSS_TARGET_SIZE = (3840, 2160)
TARGET_B_OVER_A = 2.5
TARGET_C_OVER_B = 5.0
TARGET_B_OVER_ODIFF = 1.0
TARGET_D_OVER_B = 3.0
TARGET_RSS_MB = 600.0

ROW_DECODE = "a"
ROW_OURS_PIXEL = "b"
ROW_REFERENCE = "c"
ROW_OURS_AUTO = "d"
ROW_LABELS: dict[str, str] = {
    ROW_DECODE: "(a) decode both PNGs (cv2.imdecode)",
    ROW_OURS_PIXEL: "(b) ours, pixel mode",
    ROW_REFERENCE: "(c) reference: PIL + scikit-image",
    ROW_OURS_AUTO: "(d) ours, auto mode, rotated pair",
    ROW_ODIFF: "(e) odiff, native binary",
    ROW_ODIFF_COMMAND: "(e) odiff, npm command (node wrapper)",
    ROW_MAGICK: "(e) ImageMagick compare",
}


# --------------------------------------------------------------------------------------------
# One size
# --------------------------------------------------------------------------------------------


@dataclass
class PairFiles:
    """The generated pair and rotated pair of one size, as files and bytes."""

    width: int
    height: int
    a: Path
    b: Path
    rotated: Path
    png_a: bytes
    png_b: bytes
    png_rotated: bytes


def make_pair_files(width: int, height: int, directory: Path, *, seed: int) -> PairFiles:
    """Generate and write the photographic pair and the rotated pair of one size.

    Parameters
    ----------
    width, height : int
        Size in pixels.
    directory : pathlib.Path
        Existing folder for the PNG files.
    seed : int
        Seed of the pair.

    Returns
    -------
    PairFiles
        Paths ``a_WxH.png``, ``b_WxH.png``, ``rot_WxH.png`` (A rotated by ``ROTATION_DEGREES``
        and scaled by ``ROTATION_SCALE``) and their bytes.
    """
    a, b = photographic_pair(width, height, seed=seed)
    paths = [directory / f"{name}_{width}x{height}.png" for name in ("a", "b", "rot")]
    for path, img in zip(paths, (a, b, rotated(a, ROTATION_DEGREES, ROTATION_SCALE)), strict=True):
        write_png(path, img)
    data = [p.read_bytes() for p in paths]
    return PairFiles(width, height, paths[0], paths[1], paths[2], data[0], data[1], data[2])


@dataclass
class SizeReport:
    """Every figure measured on one size."""

    width: int
    height: int
    repeat: int
    file_bytes: dict[str, int]
    timings: dict[str, Timing]
    stage_ms: dict[str, float]
    startup_ms: dict[str, float]
    rss_baseline_mb: float | None
    rss_peak_mb: float | None
    checks: dict[str, Any]
    notes: list[str]

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return (self.width, self.height)

    def median(self, row: str) -> float | None:
        """Median ms of ``row``, or ``None`` when it was not measured."""
        timing = self.timings.get(row)
        return timing.median_ms if timing is not None and timing.runs_ms else None

    def to_dict(self) -> dict[str, Any]:
        """Every figure as JSON-ready plain types (times in ms, memory in MiB)."""
        return {
            "width": self.width,
            "height": self.height,
            "repeat": self.repeat,
            "file_bytes": self.file_bytes,
            "rows": {
                name: {"label": ROW_LABELS[name], **t.to_dict()} for name, t in self.timings.items()
            },
            "ours_pixel_stage_median_ms": {k: round(v, 2) for k, v in self.stage_ms.items()},
            "startup_ms": {k: round(v, 2) for k, v in self.startup_ms.items()},
            "rss_baseline_mb": _round_or_none(self.rss_baseline_mb),
            "rss_peak_mb": _round_or_none(self.rss_peak_mb),
            "rss_increment_mb": _round_or_none(
                self.rss_peak_mb - self.rss_baseline_mb
                if self.rss_peak_mb is not None and self.rss_baseline_mb is not None
                else None
            ),
            "checks": self.checks,
            "notes": self.notes,
        }


def _round_or_none(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


class _Recorder:
    """A timed engine call that keeps its last output and every run's ``timings_ms``."""

    def __init__(self, fn: Callable[[], EngineOutput]) -> None:
        self.fn = fn
        self.last: EngineOutput | None = None
        self.stage_runs: list[dict[str, float]] = []

    def __call__(self) -> None:
        self.last = self.fn()
        self.stage_runs.append(dict(self.last.result.get("timings_ms", {})))


def _tiny_pngs(directory: Path) -> tuple[Path, Path]:
    """Two different 1x1 PNGs, for measuring a tool's process start-up."""
    one_a, one_b = directory / "one_a.png", directory / "one_b.png"
    write_png(one_a, np.zeros((1, 1, 3), np.uint8))
    write_png(one_b, np.full((1, 1, 3), 200, np.uint8))
    return one_a, one_b


def run_size(
    width: int,
    height: int,
    *,
    repeat: int,
    directory: Path,
    seed: int = DEFAULT_SEED,
    tools: Sequence[ExternalTool] = (),
    measure_rss: bool = True,
) -> SizeReport:
    """Measure every row on one generated pair.

    Parameters
    ----------
    width, height : int
        Size of the pair in pixels.
    repeat : int
        Timed runs per row (after one warm-up), >= 1.
    directory : pathlib.Path
        Existing scratch folder for the PNG files and the tools' diff images.
    seed : int
        Seed of the pair.
    tools : sequence of ExternalTool
        External command lines to time (see :func:`find_external_tools`).
    measure_rss : bool
        Whether to measure peak RSS in child processes.

    Returns
    -------
    SizeReport
        Timings in ms, stage medians of (b), start-up costs, RSS in MiB, cross-checks, notes.
    """
    pair = make_pair_files(width, height, directory, seed=seed)
    notes: list[str] = []
    pixel = _Recorder(lambda: ours(pair.png_a, pair.png_b, mode="pixel"))
    auto = _Recorder(lambda: ours(pair.png_a, pair.png_rotated, mode="auto"))
    rows: dict[str, Callable[[], object]] = {
        ROW_DECODE: partial(decode_floor, pair.png_a, pair.png_b),
        ROW_OURS_PIXEL: pixel,
        ROW_REFERENCE: partial(reference, pair.png_a, pair.png_b),
        ROW_OURS_AUTO: auto,
    }

    startup: dict[str, float] = {}
    one_a, one_b = _tiny_pngs(directory)
    for tool in tools:
        out = directory / f"{tool.row}_diff_{width}x{height}.png"
        try:
            tool.run(pair.a, pair.b, out)
        except (OSError, RuntimeError) as exc:
            notes.append(f"{ROW_LABELS[tool.row]} skipped: {exc}")
            continue
        rows[tool.row] = partial(tool.run, pair.a, pair.b, out)
        one_out = directory / f"{tool.row}_diff_1x1.png"
        try:
            startup[tool.row] = Timing(
                [time_once(partial(tool.run, one_a, one_b, one_out)) for _ in range(3)]
            ).median_ms
        except (OSError, RuntimeError) as exc:
            notes.append(f"{ROW_LABELS[tool.row]}: start-up not measured: {exc}")
        if tool.note:
            notes.append(f"{ROW_LABELS[tool.row]}: {tool.note}")

    timings = time_round_robin(rows, repeat=repeat)

    stage_runs: dict[str, list[float]] = {}
    for stages in pixel.stage_runs[-repeat:]:
        for stage, ms in stages.items():
            stage_runs.setdefault(stage, []).append(float(ms))
    stage_ms = {stage: statistics.median(v) for stage, v in stage_runs.items()}

    ref = reference(pair.png_a, pair.png_b)
    assert pixel.last is not None and auto.last is not None
    ours_pixel = pixel.last.result
    ours_auto = auto.last.result
    alignment = ours_auto.get("alignment", {})
    checks: dict[str, Any] = {
        "ours_ssim": ours_pixel.get("ssim"),
        "reference_ssim": round(ref.ssim, 6),
        "ssim_abs_diff": abs(float(ours_pixel.get("ssim", float("nan"))) - ref.ssim),
        "ours_psnr": ours_pixel.get("psnr"),
        "reference_psnr": round(ref.psnr, 6),
        "ours_verdict": ours_pixel.get("verdict"),
        "ours_heatmap_bytes": len(pixel.last.heatmap_png),
        "reference_heatmap_bytes": len(ref.heatmap_png),
        "auto_verdict": ours_auto.get("verdict"),
        "auto_alignment_applied": alignment.get("applied"),
        "auto_rotation_deg": alignment.get("rotation_deg"),
        "auto_scale": alignment.get("scale"),
        "auto_ssim": ours_auto.get("ssim"),
    }

    rss_baseline = rss_peak = None
    if measure_rss:
        try:
            rss_baseline = child_peak_rss_mb(pair.a, pair.b, mode=None)
            rss_peak = child_peak_rss_mb(pair.a, pair.b, mode="pixel")
        except (OSError, RuntimeError) as exc:
            notes.append(f"peak RSS not measured: {exc}")

    return SizeReport(
        width=width,
        height=height,
        repeat=repeat,
        file_bytes={"a": len(pair.png_a), "b": len(pair.png_b), "rotated": len(pair.png_rotated)},
        timings=timings,
        stage_ms=stage_ms,
        startup_ms=startup,
        rss_baseline_mb=rss_baseline,
        rss_peak_mb=rss_peak,
        checks=checks,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


@dataclass
class TargetRow:
    """One target evaluated on one size: ``status`` is PASS, FAIL, info or n/a."""

    name: str
    size: tuple[int, int]
    value: float | None
    target: str
    status: str
    unit: str = "x"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain types."""
        return {
            "name": self.name,
            "size": f"{self.size[0]}x{self.size[1]}",
            "value": None if self.value is None else round(self.value, 3),
            "unit": self.unit,
            "target": self.target,
            "status": self.status,
        }


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def _status(value: float | None, ok: bool, *, applies: bool) -> str:
    if value is None:
        return "n/a"
    if not applies:
        return "info"
    return "PASS" if ok else "FAIL"


def evaluate_targets(reports: Sequence[SizeReport]) -> list[TargetRow]:
    """Compute every target's ratio on every size measured.

    Parameters
    ----------
    reports : sequence of SizeReport
        One per size.

    Returns
    -------
    list of TargetRow
        PASS/FAIL where the target applies (ratios on 1920x1080, RSS on 3840x2160), ``info``
        on other sizes, ``n/a`` when a row was not measured (e.g. odiff absent).
    """
    out: list[TargetRow] = []
    for r in reports:
        applies = r.size == TARGET_SIZE
        b = r.median(ROW_OURS_PIXEL)
        checks = [
            ("(b)/(a): ours vs decoding", _ratio(b, r.median(ROW_DECODE)), TARGET_B_OVER_A),
            ("(c)/(b): reference vs ours", _ratio(r.median(ROW_REFERENCE), b), -TARGET_C_OVER_B),
            ("(b)/odiff: ours vs odiff", _ratio(b, r.median(ROW_ODIFF)), TARGET_B_OVER_ODIFF),
            ("(d)/(b): auto rotated vs pixel", _ratio(r.median(ROW_OURS_AUTO), b), TARGET_D_OVER_B),
        ]
        for name, value, limit in checks:
            # A negative limit means "at least |limit|", a positive one "at most limit".
            if limit < 0:
                ok, target = value is not None and value >= -limit, f">= {-limit:g}"
            else:
                ok, target = value is not None and value <= limit, f"<= {limit:g}"
            out.append(TargetRow(name, r.size, value, target, _status(value, ok, applies=applies)))
        if r.median(ROW_ODIFF) is None and r.median(ROW_ODIFF_COMMAND) is not None:
            value = _ratio(b, r.median(ROW_ODIFF_COMMAND))
            ok = value is not None and value <= TARGET_B_OVER_ODIFF
            out[-3] = TargetRow(
                "(b)/odiff command: ours vs odiff",
                r.size,
                value,
                f"<= {TARGET_B_OVER_ODIFF:g}",
                _status(value, ok, applies=applies),
            )
        rss = r.rss_peak_mb
        ok = rss is not None and rss < TARGET_RSS_MB
        out.append(
            TargetRow(
                "peak RSS of (b)",
                r.size,
                rss,
                f"< {TARGET_RSS_MB:g}",
                _status(rss, ok, applies=r.size == RSS_TARGET_SIZE),
                unit="MiB",
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Machine, output
# --------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:,.{digits}f}"


def _num(value: object, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else str(value)


def render(
    console: Console,
    machine: dict[str, Any],
    reports: Sequence[SizeReport],
    targets: Sequence[TargetRow],
) -> None:
    """Print the benchmark's tables."""
    load_end = machine.get("load_average_end")
    console.print(
        f"[bold]DiffALL engine benchmark[/bold] on {machine['cpu_model']}: "
        f"{machine['cpu_count']} cores ({machine['cpu_affinity']} usable), "
        f"cv2 threads {machine['cv2_threads']}"
    )
    console.print(
        "load average (1, 5, 15 min): at start "
        + " ".join(str(v) for v in machine["load_average"])
        + ("" if load_end is None else "; at end " + " ".join(str(v) for v in load_end))
    )
    console.print(
        f"python {machine['python']}, numpy {machine['numpy']}, opencv {machine['opencv']}, "
        f"scikit-image {machine['scikit_image']}, pillow {machine['pillow']}"
    )
    for r in reports:
        a = r.median(ROW_DECODE)
        b = r.median(ROW_OURS_PIXEL)
        table = Table(
            title=(
                f"{r.width}x{r.height}: median of {r.repeat} run{'s' if r.repeat != 1 else ''} "
                f"after a warm-up "
                f"(PNG A {r.file_bytes['a'] / 1e6:.1f} MB, B {r.file_bytes['b'] / 1e6:.1f} MB)"
            ),
            title_justify="left",
        )
        table.add_column("row")
        table.add_column("median ms", justify="right")
        table.add_column("min ms", justify="right")
        table.add_column("/ (a)", justify="right")
        table.add_column("/ (b)", justify="right")
        table.add_column("start-up ms", justify="right")
        for name, timing in r.timings.items():
            table.add_row(
                ROW_LABELS[name],
                _fmt(timing.median_ms),
                _fmt(timing.min_ms),
                _fmt(_ratio(timing.median_ms, a), 2),
                _fmt(_ratio(timing.median_ms, b), 2),
                _fmt(r.startup_ms.get(name)),
            )
        console.print(table)
        if r.stage_ms:
            stages = ", ".join(f"{k} {v:.1f}" for k, v in r.stage_ms.items())
            console.print(f"  (b) stages, median ms: {stages}")
        if r.rss_peak_mb is not None and r.rss_baseline_mb is not None:
            console.print(
                f"  peak RSS of (b) in a fresh process: {r.rss_peak_mb:.0f} MiB "
                f"(baseline import + read files {r.rss_baseline_mb:.0f} MiB, "
                f"increment {r.rss_peak_mb - r.rss_baseline_mb:.0f} MiB)"
            )
        c = r.checks
        console.print(
            f"  check, pixel pair: SSIM ours {_num(c['ours_ssim'], 6)} vs scikit-image "
            f"{_num(c['reference_ssim'], 6)} (|diff| {c['ssim_abs_diff']:.1e}), "
            f"PSNR {_num(c['ours_psnr'], 3)} vs {_num(c['reference_psnr'], 3)} dB"
        )
        console.print(
            f"  check, rotated pair, auto mode: aligned {c['auto_alignment_applied']}, rotation "
            f"{_num(c['auto_rotation_deg'], 2)} deg, scale {_num(c['auto_scale'], 3)} (made with "
            f"{ROTATION_DEGREES:+g} deg, x{ROTATION_SCALE:g}), SSIM {_num(c['auto_ssim'], 4)}"
        )
        console.print(
            f"  verdicts: pixel pair {c['ours_verdict']}, rotated pair (auto) {c['auto_verdict']}"
        )
        for note in r.notes:
            console.print(f"  note: {note}")
    table = Table(title="Targets (ratios of medians)", title_justify="left")
    table.add_column("target")
    table.add_column("size")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="right")
    table.add_column("status")
    colours = {"PASS": "green", "FAIL": "red"}
    for t in targets:
        colour = colours.get(t.status, "dim")
        table.add_row(
            t.name,
            f"{t.size[0]}x{t.size[1]}",
            _fmt(t.value, 0 if t.unit == "MiB" else 2) + (" MiB" if t.unit == "MiB" else ""),
            t.target + (" MiB" if t.unit == "MiB" else ""),
            f"[{colour}]{t.status}[/{colour}]",
        )
    console.print(table)
    console.print(
        "Ratio targets apply to 1920x1080 and the RSS target to 3840x2160; other sizes: info."
    )


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """Parse ``--sizes``: comma-separated names (``1080p``, ``4k``, ...) or ``WxH``.

    Parameters
    ----------
    text : str
        For example ``"1080p,4k"`` or ``"320x180"``.

    Returns
    -------
    list of tuple of int
        ``(width, height)`` pairs in pixels, each side at least 16.
    """
    sizes: list[tuple[int, int]] = []
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        if part in NAMED_SIZES:
            sizes.append(NAMED_SIZES[part])
            continue
        try:
            w, h = (int(v) for v in part.split("x"))
        except ValueError:
            raise ValueError(f"unknown size {part!r}: use 1080p, 4k, ... or WxH") from None
        if w < 16 or h < 16:
            raise ValueError(f"size {part!r} is too small (at least 16x16)")
        sizes.append((w, h))
    if not sizes:
        raise ValueError("no size given")
    return sizes


def default_repeat(width: int, height: int) -> int:
    """Runs per row when ``--repeat`` is not given: 7 up to 1080p, 3 above."""
    return DEFAULT_REPEAT_SMALL if width * height <= 1920 * 1080 else DEFAULT_REPEAT_LARGE


def run(
    sizes: Sequence[tuple[int, int]],
    *,
    repeat: int | None = None,
    seed: int = DEFAULT_SEED,
    console: Console | None = None,
    measure_rss: bool = True,
) -> dict[str, Any]:
    """Run the benchmark on each size, print the tables and return every figure.

    Parameters
    ----------
    sizes : sequence of tuple of int
        ``(width, height)`` pairs in pixels.
    repeat : int, optional
        Timed runs per row for every size (default: :func:`default_repeat`).
    seed : int
        Seed of the generated pairs.
    console : rich.console.Console, optional
        Where to print (default: standard output, at least 130 columns wide).
    measure_rss : bool
        Whether to measure peak RSS in child processes.

    Returns
    -------
    dict
        ``machine``, ``sizes`` (one :meth:`SizeReport.to_dict` each), ``targets``.
    """
    if console is None:
        console = Console()
        if not console.is_terminal:
            console.width = max(console.width, 130)
    tools = find_external_tools()
    machine = machine_info(tools)
    reports: list[SizeReport] = []
    skipped = []
    if not any(t.row in (ROW_ODIFF, ROW_ODIFF_COMMAND) for t in tools):
        skipped.append("odiff not found (npm install -g odiff-bin)")
    if not any(t.row == ROW_MAGICK for t in tools):
        skipped.append("ImageMagick compare not found (apt-get install -y imagemagick)")
    with tempfile.TemporaryDirectory(prefix="diffall-bench-") as tmp:
        for width, height in sizes:
            n = repeat if repeat is not None else default_repeat(width, height)
            reports.append(
                run_size(
                    width,
                    height,
                    repeat=n,
                    directory=Path(tmp),
                    seed=seed,
                    tools=tools,
                    measure_rss=measure_rss,
                )
            )
    machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    targets = evaluate_targets(reports)
    render(console, machine, reports, targets)
    for note in skipped:
        console.print(f"note: {note}; its rows are skipped")
    return {
        "machine": machine,
        "skipped": skipped,
        "sizes": [r.to_dict() for r in reports],
        "targets": [t.to_dict() for t in targets],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 even when a target fails)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_engine", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"timed runs per row (default {DEFAULT_REPEAT_SMALL} up to 1080p, "
        f"{DEFAULT_REPEAT_LARGE} above)",
    )
    parser.add_argument(
        "--sizes", default="1080p,4k", help="comma-separated: 720p, 1080p, 1440p, 4k or WxH"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the image pairs")
    args = parser.parse_args(argv)
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        parser.error(str(exc))
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    figures = run(sizes, repeat=args.repeat, seed=args.seed)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
