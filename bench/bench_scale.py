"""Scale benchmark: does the pixel path's cost grow linearly with the image size?

Run from the repository root::

    .venv/bin/python -m bench.bench_scale [--sizes 2mp,8mp,37mp,100mp] [--gigapixel]
        [--chromium] [--repeat N] [--odiff-dir DIR] [--json OUT]

For each size a deterministic pair of "drawn pages" (see :func:`page_pair`: text lines, bars,
blocks of colour on white, like a full-page screenshot; B has a few localised edits) is written
as PNG files, then each of these whole processes is run ``repeat`` times, round-robin:

``ours``
    a fresh Python process that reads both files and runs ``compare(mode="pixel")`` with its
    heatmap (and preview) written to a file: what ``diffall compare --mode pixel --heatmap`` does
    (with the header limits on pixels and bytes lifted, so that the 1 GP pair is compared);
``ours_whole``
    the same with the banded path switched off (``compare.BANDED_MIN_PIXELS`` raised): the
    whole-image pipeline, measured in the same run, so "before vs after" is one table;
``decode``
    a fresh Python process that only decodes both files with ``cv2.imread``: the decode floor;
``odiff``
    odiff's native binary (npm ``odiff-bin``) writing its diff PNG, when found.

Each process is started by a small launcher that reports its wall time and its peak RSS
(``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of the launcher, whose only child it is). Python rows
also report their in-process time (the engine's ``timings_ms["total"]``, the decode time), so
interpreter and import start-up can be told apart. Figures are medians; ratios are taken between
rows of the same run. ``--chromium`` adds a real full-page screenshot pair rendered by headless
Debian chromium (Playwright).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from bench.lib.tools import ROW_ODIFF, find_odiff, machine_info

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Named sizes accepted by ``--sizes`` (``WxH`` is accepted too), in pixels.
NAMED_SIZES: dict[str, tuple[int, int]] = {
    "1mp": (1280, 800),
    "2mp": (1920, 1080),
    "8mp": (3840, 2160),
    "37mp": (3446, 10728),
    "100mp": (10000, 10000),
    "1gp": (40000, 25000),
}
DEFAULT_SIZES = "2mp,8mp,37mp,100mp"
DEFAULT_SEED = 13
#: The size whose time per megapixel is the reference of the growth ratio.
BASE_SIZE = (1920, 1080)

ROW_OURS = "ours"
ROW_WHOLE = "ours_whole"
ROW_DECODE = "decode"
ROWS = (ROW_OURS, ROW_WHOLE, ROW_DECODE, ROW_ODIFF)

_LAUNCHER = """
import resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[2:], stdout=subprocess.PIPE, check=False)
wall = time.perf_counter() - t
out = p.stdout.decode().strip().splitlines()
ok = p.returncode in [int(c) for c in sys.argv[1].split(",")]
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, int(ok), out[-1] if out else "")
"""

_OURS_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import importlib
from core.imaging import CompareOptions, compare
engine = importlib.import_module("core.imaging.compare")
if sys.argv[5] == "whole":
    engine.BANDED_MIN_PIXELS = 1 << 62
a = Path(sys.argv[2]).read_bytes()
b = Path(sys.argv[3]).read_bytes()
result = compare(a, b, CompareOptions(mode="pixel", max_pixels=1 << 40, max_bytes=1 << 40))
result.to_dict()
Path(sys.argv[4]).write_bytes(result.heatmap_png)
print(result.timings_ms["total"] / 1000.0)
"""

_DECODE_CHILD = """
import sys, time
import cv2
t = time.perf_counter()
a = cv2.imread(sys.argv[1], cv2.IMREAD_UNCHANGED)
b = cv2.imread(sys.argv[2], cv2.IMREAD_UNCHANGED)
assert a is not None and b is not None
print(time.perf_counter() - t)
"""


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def _draw_section(img: np.ndarray, y0: int, rng: np.random.Generator) -> int:
    """Draw one page section (heading bar, paragraphs, a card) from row ``y0``; return its end."""
    height, width = img.shape[:2]
    margin = max(8, width // 20)
    y = y0 + 24
    colour = tuple(int(c) for c in rng.integers(30, 220, 3))
    cv2.rectangle(img, (0, y), (width - 1, y + 60), colour, -1)
    cv2.putText(
        img,
        f"Section {y0}",
        (margin, y + 44),
        cv2.FONT_HERSHEY_SIMPLEX,
        1.4,
        (255, 255, 255),
        2,
        cv2.LINE_AA,
    )
    y += 100
    words = ("visual", "testing", "screenshot", "pixel", "diff", "page", "render", "layout")
    for _ in range(int(rng.integers(6, 14))):
        if y + 30 > height:
            return height
        text = " ".join(words[int(i)] for i in rng.integers(0, len(words), 12))
        cv2.putText(
            img, text, (margin, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (40, 40, 40), 1, cv2.LINE_AA
        )
        y += 34
    card_w = int(rng.integers(width // 6, width // 2))
    cv2.rectangle(
        img,
        (margin, y),
        (margin + card_w, y + 160),
        tuple(int(c) for c in rng.integers(0, 256, 3)),
        -1,
    )
    return y + 200


def drawn_page(width: int, height: int, *, seed: int) -> np.ndarray:
    """A deterministic page-like BGR ``uint8`` image: white with bars, text lines and cards.

    Drawn in a 1920-pixel-wide column repeated across wider pages, so any size is quick to make.
    """
    rng = np.random.default_rng(seed)
    col_w = min(width, 1920)
    column = np.full((height, col_w, 3), 255, np.uint8)
    y = 0
    while y < height:
        y = _draw_section(column, y, rng)
    reps = -(-width // col_w)
    page = np.tile(column, (1, reps, 1))[:, :width] if reps > 1 else column
    return np.ascontiguousarray(page)


def page_pair(width: int, height: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Page A and page B: B is A with three localised edits (a recoloured box, new text, a
    shifted card), like two renders of a page one commit apart."""
    a = drawn_page(width, height, seed=seed)
    b = a.copy()
    rng = np.random.default_rng(seed + 1)
    for k in range(3):
        x = int(rng.integers(0, max(1, width - width // 8)))
        y = int(rng.integers(0, max(1, height - height // 20)))
        w, h = max(4, width // 10), max(4, min(height // 30, 400))
        if k == 0:
            cv2.rectangle(b, (x, y), (x + w, y + h), (0, 90, 200), -1)
        elif k == 1:
            cv2.putText(
                b,
                "changed copy",
                (x, y + h // 2),
                cv2.FONT_HERSHEY_SIMPLEX,
                1.0,
                (0, 0, 0),
                2,
                cv2.LINE_AA,
            )
        else:
            b[y : y + h, x + 3 : x + w] = a[y : y + h, x : x + w - 3]
    return a, b


def _write_pair(directory: Path, name: str, a: np.ndarray, b: np.ndarray) -> tuple[Path, Path]:
    pa, pb = directory / f"{name}-a.png", directory / f"{name}-b.png"
    for path, img in ((pa, a), (pb, b)):
        if not cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
            raise RuntimeError(f"could not write {path}")
    return pa, pb


_PAGE_HTML = """<!doctype html><html><head><style>
body{{font-family:sans-serif;margin:0;color:#222}} header{{background:#1b4f9c;color:#fff;
padding:40px}} section{{padding:24px 48px}} .card{{display:inline-block;width:300px;
height:160px;margin:12px;border-radius:12px;background:linear-gradient(#eef,#ccd)}}
</style></head><body><header><h1>{title}</h1></header>{sections}</body></html>"""


def chromium_pair(directory: Path, *, sections: int = 14) -> tuple[Path, Path]:
    """Render a long page twice (B with one recoloured paragraph) with headless Debian chromium,
    full-page, device scale factor 2; return the two PNG files."""
    from playwright.sync_api import sync_playwright

    def html(edited: bool) -> str:
        body = []
        for i in range(sections):
            text = f"Paragraph {i}: " + "a full page screenshot of a marketing site " * 12
            # The edit keeps the layout (same text, same boxes): a recoloured paragraph and card.
            style = ' style="color:#c01010"' if edited and i == sections // 2 else ""
            cards = "".join(
                f'<div class="card"{style if j == 2 else ""}>card {i}.{j}</div>' for j in range(4)
            )
            body.append(f"<section><h2>Feature {i}</h2><p{style}>{text}</p>{cards}</section>")
        return _PAGE_HTML.format(title="Scale benchmark", sections="".join(body))

    paths = (directory / "chromium-a.png", directory / "chromium-b.png")
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        try:
            page = browser.new_page(viewport={"width": 1723, "height": 1000}, device_scale_factor=2)
            for path, edited in zip(paths, (False, True), strict=True):
                page.set_content(html(edited))
                page.screenshot(path=str(path), full_page=True, timeout=180_000)
        finally:
            browser.close()
    return paths


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One whole-process run: wall seconds, peak RSS in MiB, in-process seconds (or None)."""

    wall_s: float
    rss_mib: float
    inner_s: float | None


def run_process(argv: list[str], ok_codes: Sequence[int] = (0,)) -> Run:
    """Run ``argv`` under the launcher; return its wall time, peak RSS and last output line."""
    codes = ",".join(str(c) for c in ok_codes)
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _LAUNCHER, codes, *argv],
        capture_output=True,
        check=False,
    )
    parts = proc.stdout.decode().split()
    if proc.returncode != 0 or len(parts) < 3 or parts[2] != "1":
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"{argv[0]} failed: {err[-1] if err else parts}")
    inner = float(parts[3]) if len(parts) > 3 else None
    return Run(float(parts[0]), int(parts[1]) / 1024.0, inner)


@dataclass
class SizeReport:
    """Every run of every row for one pair."""

    name: str
    width: int
    height: int
    file_mib: float
    runs: dict[str, list[Run]] = field(default_factory=dict)

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    def median(self, row: str, what: str = "wall_s") -> float | None:
        values = [getattr(r, what) for r in self.runs.get(row, [])]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "megapixels": round(self.megapixels, 2),
            "files_mib": round(self.file_mib, 1),
            "median": {
                row: {k: self.median(row, k) for k in ("wall_s", "rss_mib", "inner_s")}
                for row in self.runs
            },
            "runs": {row: [vars(r) for r in runs] for row, runs in self.runs.items()},
        }


def measure_pair(
    name: str,
    a: Path,
    b: Path,
    *,
    repeat: int,
    odiff: list[str] | None,
    whole: bool,
    out_dir: Path,
) -> SizeReport:
    """Time every row on one pair of files, round-robin, ``repeat`` times each."""
    width, height = _png_size(a)
    heat = out_dir / f"{name}-heatmap.png"
    commands: dict[str, tuple[list[str], Sequence[int]]] = {
        ROW_OURS: (
            [
                sys.executable,
                "-c",
                _OURS_CHILD,
                str(REPO_ROOT),
                str(a),
                str(b),
                str(heat),
                "banded",
            ],
            (0,),
        ),
        ROW_DECODE: ([sys.executable, "-c", _DECODE_CHILD, str(a), str(b)], (0,)),
    }
    if whole:
        commands[ROW_WHOLE] = ([*commands[ROW_OURS][0][:-1], "whole"], (0,))
    if odiff is not None:
        commands[ROW_ODIFF] = (
            [*odiff, str(a), str(b), str(out_dir / f"{name}-odiff.png")],
            (0, 22),
        )
    report = SizeReport(name, width, height, (a.stat().st_size + b.stat().st_size) / 2**20)
    for _ in range(repeat):
        for row, (argv, ok) in commands.items():
            report.runs.setdefault(row, []).append(run_process(argv, ok))
    return report


def _png_size(path: Path) -> tuple[int, int]:
    with path.open("rb") as fh:
        head = fh.read(24)
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den == 0 else num / den


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{suffix}"


def summarise(reports: Sequence[SizeReport]) -> list[dict[str, Any]]:
    """One row of figures and ratios per size (medians; ratios within the run)."""
    base = next((r for r in reports if (r.width, r.height) == BASE_SIZE), None)
    base_ms_mp = None if base is None else base.median(ROW_OURS, "inner_s")
    base_ms_mp = None if base_ms_mp is None or base is None else base_ms_mp / base.megapixels
    rows = []
    for r in reports:
        ours, ours_in = r.median(ROW_OURS), r.median(ROW_OURS, "inner_s")
        whole, whole_in = r.median(ROW_WHOLE), r.median(ROW_WHOLE, "inner_s")
        odiff = r.median(ROW_ODIFF)
        per_mp = None if ours_in is None else 1000.0 * ours_in / r.megapixels
        rows.append(
            {
                "name": r.name,
                "size": f"{r.width}x{r.height}",
                "megapixels": r.megapixels,
                "ours_wall_s": ours,
                "ours_engine_s": ours_in,
                "ours_rss_mib": r.median(ROW_OURS, "rss_mib"),
                "whole_wall_s": whole,
                "whole_engine_s": whole_in,
                "whole_rss_mib": r.median(ROW_WHOLE, "rss_mib"),
                "decode_wall_s": r.median(ROW_DECODE),
                "decode_s": r.median(ROW_DECODE, "inner_s"),
                "decode_rss_mib": r.median(ROW_DECODE, "rss_mib"),
                "odiff_wall_s": odiff,
                "odiff_rss_mib": r.median(ROW_ODIFF, "rss_mib"),
                "ours_over_odiff_wall": _ratio(ours, odiff),
                "ours_over_odiff_rss": _ratio(
                    r.median(ROW_OURS, "rss_mib"), r.median(ROW_ODIFF, "rss_mib")
                ),
                "ours_over_decode": _ratio(ours_in, r.median(ROW_DECODE, "inner_s")),
                "ours_over_whole_wall": _ratio(ours, whole),
                "ours_ms_per_mp": per_mp,
                "growth_vs_2mp": _ratio(per_mp, 1000.0 * base_ms_mp if base_ms_mp else None),
            }
        )
    return rows


def render(console: Console, rows: Sequence[dict[str, Any]]) -> None:
    """Print the table of figures and ratios."""
    table = Table(title="Scale benchmark: pixel mode with heatmap, whole processes, medians")
    columns = [
        ("pair", "name", None, ""),
        ("size", "size", None, ""),
        ("MP", "megapixels", 1, ""),
        ("ours wall", "ours_wall_s", 2, " s"),
        ("ours engine", "ours_engine_s", 2, " s"),
        ("ours RSS", "ours_rss_mib", 0, " MiB"),
        ("whole-image wall", "whole_wall_s", 2, " s"),
        ("whole-image RSS", "whole_rss_mib", 0, " MiB"),
        ("decode floor", "decode_s", 2, " s"),
        ("odiff wall", "odiff_wall_s", 2, " s"),
        ("odiff RSS", "odiff_rss_mib", 0, " MiB"),
        ("ours/odiff wall", "ours_over_odiff_wall", 2, "x"),
        ("ours/odiff RSS", "ours_over_odiff_rss", 2, "x"),
        ("engine/decode", "ours_over_decode", 2, "x"),
        ("ours/whole wall", "ours_over_whole_wall", 2, "x"),
        ("ms per MP", "ours_ms_per_mp", 0, ""),
        ("growth vs 2 MP", "growth_vs_2mp", 2, "x"),
    ]
    for title, *_ in columns:
        table.add_column(title, justify="right")
    for row in rows:
        cells = []
        for _, key, digits, suffix in columns:
            value = row[key]
            cells.append(str(value) if digits is None else _fmt(value, digits, suffix))
        table.add_row(*cells)
    console.print(table)


def parse_sizes(text: str) -> list[tuple[str, int, int]]:
    """``2mp,37mp,640x480`` -> ``[(name, width, height), ...]``; raises ``ValueError``."""
    out = []
    for item in filter(None, (s.strip().lower() for s in text.split(","))):
        if item in NAMED_SIZES:
            out.append((item, *NAMED_SIZES[item]))
            continue
        w, sep, h = item.partition("x")
        if not sep or not w.isdigit() or not h.isdigit() or int(w) < 16 or int(h) < 16:
            raise ValueError(f"unknown size {item!r}: use {', '.join(NAMED_SIZES)} or WxH")
        out.append((item, int(w), int(h)))
    return out


def run(
    sizes: Sequence[tuple[str, int, int]],
    *,
    repeat: int | None = None,
    seed: int = DEFAULT_SEED,
    chromium: bool = False,
    odiff_dir: Path | None = None,
    whole: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Generate the pairs, measure every row, print the table; return every figure."""
    console = console or Console(width=220)
    tools = [t for t in find_odiff(odiff_dir) if t.row == ROW_ODIFF]
    odiff = tools[0].argv[:1] if tools else None
    notes = [] if odiff else ["odiff not found (npm install odiff-bin; --odiff-dir): n/a"]
    reports = []
    with tempfile.TemporaryDirectory(prefix="diffall-scale-") as tmp:
        work = Path(tmp)
        pairs: list[tuple[str, Path, Path]] = []
        for name, width, height in sizes:
            a, b = page_pair(width, height, seed=seed)
            pa, pb = _write_pair(work, name, a, b)
            del a, b
            pairs.append((name, pa, pb))
        if chromium:
            try:
                pairs.append(("chromium", *chromium_pair(work)))
            except Exception as exc:  # a missing browser skips one pair
                notes.append(f"chromium pair skipped: {exc}")
        for name, pa, pb in pairs:
            w, h = _png_size(pa)
            n = repeat if repeat is not None else (3 if w * h <= 40_000_000 else 1)
            console.print(f"measuring {name} ({w}x{h}), {n} run(s) per row ...")
            reports.append(
                measure_pair(name, pa, pb, repeat=n, odiff=odiff, whole=whole, out_dir=work)
            )
    rows = summarise(reports)
    render(console, rows)
    for note in notes:
        console.print(f"note: {note}")
    return {
        "machine": machine_info(tools),
        "notes": notes,
        "summary": rows,
        "pairs": [r.to_dict() for r in reports],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_scale", description=__doc__)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="e.g. 2mp,8mp,37mp,100mp or WxH")
    parser.add_argument("--gigapixel", action="store_true", help="add the 1 GP (40000x25000) pair")
    parser.add_argument("--chromium", action="store_true", help="add a chromium screenshot pair")
    parser.add_argument("--no-whole", action="store_true", help="skip the whole-image row")
    parser.add_argument("--repeat", type=int, default=None, help="runs per row (3, 1 above 40 MP)")
    parser.add_argument("--odiff-dir", type=Path, default=None, help="folder with node_modules/")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        parser.error(str(exc))
    if args.gigapixel:
        sizes.append(("1gp", *NAMED_SIZES["1gp"]))
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    figures = run(
        sizes,
        repeat=args.repeat,
        seed=args.seed,
        chromium=args.chromium,
        odiff_dir=args.odiff_dir,
        whole=not args.no_whole,
    )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
