"""Verdict benchmark: how often the engine's verdict, regions and findings are right.

Builds the labelled corpus of ``bench/verdict_corpus.py`` (deterministic, offline), compares every
pair in ``auto`` mode and, where A and B have the same size, in ``pixel`` mode, and prints:

- per category and per half (``tune`` / ``held_out``, split by source image): right verdicts of
  each mode, ``right/total`` and %;
- a confusion matrix per mode (rows: the first accepted verdict of the pair; columns: what the
  engine said);
- region recall on edited pairs: a true edit box counts as found when a reported region has
  IoU >= 0.5 with it (``iou``), or, more leniently, when a region covers at least 80 % of it and is
  at most 4 times its area (``cover``); false regions per edited pair are regions that touch no
  true box;
- findings: on pairs with a known cause, the share whose ``findings`` name the right kind;
- time per pair (median and 95th percentile of ``compare`` in auto mode).

Run from the repository root::

    .venv/bin/python -m bench.bench_verdict                       # the whole corpus
    .venv/bin/python -m bench.bench_verdict --json /tmp/verdict.json
    .venv/bin/python -m bench.bench_verdict --sources astronaut,ui0 --modes auto
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.verdict_corpus import Box, Pair, build_corpus, split_of
from core.imaging import CompareOptions, compare
from core.imaging.result import VERDICTS

#: Targets of the issue, on the held-out half.
TARGET_VERDICT = 0.97
TARGET_CATEGORY = 0.90
TARGET_RECALL = 0.95
TARGET_FALSE_REGIONS = 1.0
TARGET_FINDINGS = 0.90
#: Cause label of the corpus -> finding kinds that name it.
CAUSE_KINDS: dict[str, tuple[str, ...]] = {
    "jpeg": ("jpeg_reencode",),
    "chroma_subsampling": ("chroma_subsampling",),
    "resampled": ("resampled",),
    "blur": ("blur",),
    "tone": ("tone",),
    "greyscale": ("greyscale",),
    "colour": ("colour",),
    "flip": ("flip",),
    "crop": ("crop",),
    "rotation": ("rotation",),
    "perspective": ("perspective", "rotation"),
    "shift": ("shift",),
    "edit": ("edit",),
    "antialias": ("antialiasing",),
}


@dataclass
class Outcome:
    """What the engine said about one pair in one mode."""

    name: str
    source: str
    split: str
    category: str
    mode: str
    accept: list[str]
    verdict: str
    right: bool
    ms: float
    boxes: int = 0
    found_iou: int = 0
    found_cover: int = 0
    false_regions: int = 0
    causes: list[str] = field(default_factory=list)
    causes_found: int = 0
    summary: str = ""
    ssim: float = 0.0
    changed_ratio: float = 0.0
    antialiased_ratio: float = 0.0
    content_correlation: float = 0.0
    ssim_floor: float | None = None
    regions: int = 0
    findings: list[str] = field(default_factory=list)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes, 0..1."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


def covers(region: Box, truth: Box) -> bool:
    """``region`` holds >= 80 % of ``truth`` and is at most 4x its area."""
    ix = max(0, min(region[0] + region[2], truth[0] + truth[2]) - max(region[0], truth[0]))
    iy = max(0, min(region[1] + region[3], truth[1] + truth[3]) - max(region[1], truth[1]))
    area = truth[2] * truth[3]
    return ix * iy >= 0.8 * area and region[2] * region[3] <= 4 * area


def evaluate(pair: Pair, mode: str) -> Outcome:
    """Compare one pair in ``mode`` and score the verdict, regions and findings."""
    accept = pair.accept if mode == "auto" else pair.accept_pixel
    assert accept is not None
    options = CompareOptions(mode=mode, preview_max_side=None)  # type: ignore[arg-type]
    start = time.perf_counter()
    result = compare(pair.a, pair.b, options)
    ms = (time.perf_counter() - start) * 1000.0
    out = result.to_dict()
    regions: list[Box] = [(r["x"], r["y"], r["width"], r["height"]) for r in out["regions"]]
    outcome = Outcome(
        name=pair.name,
        source=pair.source,
        split=split_of(pair.source),
        category=pair.category,
        mode=mode,
        accept=list(accept),
        verdict=result.verdict,
        right=result.verdict in accept,
        ms=ms,
        summary=result.summary,
        ssim=out["ssim"],
        changed_ratio=out["changed_ratio"],
        antialiased_ratio=out.get("antialiased_ratio", 0.0),
        content_correlation=out.get("content_correlation", 0.0),
        ssim_floor=out.get("ssim_floor"),
        regions=len(out["regions"]),
        findings=sorted({f["kind"] for f in out.get("findings", [])}),
    )
    if pair.boxes:
        outcome.boxes = len(pair.boxes)
        outcome.found_iou = sum(any(iou(r, t) >= 0.5 for r in regions) for t in pair.boxes)
        outcome.found_cover = sum(
            any(iou(r, t) >= 0.5 or covers(r, t) for r in regions) for t in pair.boxes
        )
        outcome.false_regions = sum(all(iou(r, t) == 0.0 for t in pair.boxes) for r in regions)
    kinds = {f["kind"] for f in out.get("findings", [])}
    outcome.causes = [c for c in pair.causes if c in CAUSE_KINDS]
    outcome.causes_found = sum(any(k in kinds for k in CAUSE_KINDS[c]) for c in outcome.causes)
    return outcome


def run(pairs: Sequence[Pair], modes: Sequence[str], *, verbose: bool = False) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for pair in pairs:
        for mode in modes:
            if mode == "pixel" and pair.accept_pixel is None:
                continue
            outcome = evaluate(pair, mode)
            outcomes.append(outcome)
            if verbose and not outcome.right:
                print(
                    f"  WRONG {mode:5} {pair.name:28} -> {outcome.verdict} ssim={outcome.ssim:.4f}"
                    f" floor={outcome.ssim_floor} chg={outcome.changed_ratio:.4f}"
                    f" aa={outcome.antialiased_ratio:.4f} corr={outcome.content_correlation:.2f}"
                    f" reg={outcome.regions}: {outcome.summary}"
                )
    return outcomes


def _pct(num: int, den: int) -> str:
    return f"{num:>3}/{den:<3} {100.0 * num / den:5.1f} %" if den else "      -       "


def category_table(outcomes: Sequence[Outcome], modes: Sequence[str]) -> list[str]:
    """Right verdicts per category, per half and mode."""
    cats = sorted({o.category for o in outcomes})
    cols = [(split, mode) for mode in modes for split in ("tune", "held_out")]
    head = f"{'category':14}" + "".join(f" | {mode + ' ' + split:>16}" for split, mode in cols)
    lines = [head, "-" * len(head)]
    for cat in [*cats, "ALL"]:
        cells = []
        for split, mode in cols:
            sel = [
                o
                for o in outcomes
                if o.split == split and o.mode == mode and (cat == "ALL" or o.category == cat)
            ]
            cells.append(_pct(sum(o.right for o in sel), len(sel)))
        lines.append(f"{cat:14}" + "".join(f" | {c:>16}" for c in cells))
    return lines


def confusion(outcomes: Sequence[Outcome], mode: str, split: str) -> list[str]:
    """Rows: expected (first accepted) verdict; columns: the engine's verdict."""
    sel = [o for o in outcomes if o.mode == mode and o.split == split]
    counts = Counter((o.accept[0], o.verdict) for o in sel)
    short = {v: v[:9] for v in VERDICTS}
    head = f"{mode + '/' + split:>16} |" + "".join(f" {short[v]:>9}" for v in VERDICTS)
    lines = [head, "-" * len(head)]
    for expected in VERDICTS:
        if not any(o.accept[0] == expected for o in sel):
            continue
        lines.append(
            f"{expected:>16} |" + "".join(f" {counts[(expected, v)]:>9}" for v in VERDICTS)
        )
    return lines


def figures(outcomes: Sequence[Outcome], split: str, mode: str = "auto") -> dict[str, Any]:
    """The headline figures of one half and mode."""
    sel = [o for o in outcomes if o.split == split and o.mode == mode]
    edited = [o for o in sel if o.boxes]
    per_cat: dict[str, list[Outcome]] = defaultdict(list)
    for o in sel:
        per_cat[o.category].append(o)
    with_cause = [o for o in sel if o.causes]
    times = sorted(o.ms for o in sel)
    return {
        "pairs": len(sel),
        "verdict_right": sum(o.right for o in sel) / len(sel) if sel else 0.0,
        "worst_category": min(
            ((sum(o.right for o in v) / len(v), k) for k, v in per_cat.items()), default=(0, "")
        ),
        "edited_pairs": len(edited),
        "recall_iou": (
            sum(o.found_iou == o.boxes for o in edited) / len(edited) if edited else 0.0
        ),
        "recall_cover": (
            sum(o.found_cover == o.boxes for o in edited) / len(edited) if edited else 0.0
        ),
        "false_regions_per_pair": (
            sum(o.false_regions for o in edited) / len(edited) if edited else 0.0
        ),
        "findings_right": (
            sum(o.causes_found == len(o.causes) for o in with_cause) / len(with_cause)
            if with_cause
            else 0.0
        ),
        "ms_median": statistics.median(times) if times else 0.0,
        "ms_p95": times[int(0.95 * (len(times) - 1))] if times else 0.0,
    }


def report(outcomes: Sequence[Outcome], modes: Sequence[str]) -> list[str]:
    lines = ["Right verdicts per category (right/total, %)", *category_table(outcomes, modes), ""]
    for mode in modes:
        for split in ("tune", "held_out"):
            lines += [*confusion(outcomes, mode, split), ""]
    lines.append(
        f"{'half':9} {'mode':5} {'pairs':>5} {'verdict':>8} {'worst category':>24} "
        f"{'recall iou':>10} {'recall cov':>10} {'false/pair':>10} {'findings':>8} "
        f"{'ms med':>7} {'ms p95':>7}"
    )
    for mode in modes:
        for split in ("tune", "held_out"):
            f = figures(outcomes, split, mode)
            worst = f"{f['worst_category'][1]} {100 * f['worst_category'][0]:.0f} %"
            lines.append(
                f"{split:9} {mode:5} {f['pairs']:>5} {100 * f['verdict_right']:7.1f}% "
                f"{worst:>24} {100 * f['recall_iou']:9.1f}% {100 * f['recall_cover']:9.1f}% "
                f"{f['false_regions_per_pair']:10.2f} {100 * f['findings_right']:7.1f}% "
                f"{f['ms_median']:7.1f} {f['ms_p95']:7.1f}"
            )
    held = figures(outcomes, "held_out", "auto")
    lines += [
        "",
        "Targets (held-out half, auto mode):",
        f"  verdict right >= {TARGET_VERDICT:.0%}: {held['verdict_right']:.1%}"
        f" {'met' if held['verdict_right'] >= TARGET_VERDICT else 'NOT met'}",
        f"  every category >= {TARGET_CATEGORY:.0%}: worst {held['worst_category'][1]}"
        f" {held['worst_category'][0]:.1%}"
        f" {'met' if held['worst_category'][0] >= TARGET_CATEGORY else 'NOT met'}",
        f"  region recall (IoU >= 0.5) >= {TARGET_RECALL:.0%}: {held['recall_iou']:.1%}"
        f" {'met' if held['recall_iou'] >= TARGET_RECALL else 'NOT met'}",
        f"  false regions per edited pair <= {TARGET_FALSE_REGIONS}:"
        f" {held['false_regions_per_pair']:.2f}"
        f" {'met' if held['false_regions_per_pair'] <= TARGET_FALSE_REGIONS else 'NOT met'}",
        f"  findings right >= {TARGET_FINDINGS:.0%}: {held['findings_right']:.1%}"
        f" {'met' if held['findings_right'] >= TARGET_FINDINGS else 'NOT met'}",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build the corpus, compare, print the tables; exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", help="comma-separated source names (default: all)")
    parser.add_argument("--modes", default="auto,pixel", help="auto,pixel (default both)")
    parser.add_argument("--json", type=Path, help="write every outcome and figure as JSON")
    parser.add_argument("--split", choices=("tune", "held_out"), help="only this half")
    parser.add_argument("--verbose", action="store_true", help="print every wrong verdict")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    sources = tuple(args.sources.split(",")) if args.sources else None
    start = time.perf_counter()
    pairs = build_corpus(sources)
    if args.split:
        pairs = [p for p in pairs if split_of(p.source) == args.split]
    built = time.perf_counter() - start
    print(
        f"corpus: {len(pairs)} pairs from {len({p.source for p in pairs})} sources"
        f" (built in {built:.1f} s)"
    )
    outcomes = run(pairs, modes, verbose=args.verbose)
    for line in report(outcomes, modes):
        print(line)
    if args.json is not None:
        payload = {
            "pairs": len(pairs),
            "figures": {
                f"{mode}/{split}": figures(outcomes, split, mode)
                for mode in modes
                for split in ("tune", "held_out")
            },
            "outcomes": [asdict(o) for o in outcomes],
        }
        args.json.write_text(json.dumps(payload, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
