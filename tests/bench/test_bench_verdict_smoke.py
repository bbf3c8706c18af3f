"""Smoke tests of the verdict benchmark: its corpus is deterministic and labelled, and it runs end
to end on a tiny subset (two sources), printing its tables and writing its JSON.

Accuracy is not asserted here (that is what the benchmark reports); these tests prove the corpus,
the scoring and the output work.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import bench_verdict as bv
from bench.chromium_pages import render_html
from bench.verdict_corpus import (
    PHOTO_SOURCES,
    UI_SOURCES,
    WEB_SOURCES,
    Pair,
    build_corpus,
    split_of,
)
from core.imaging.result import VERDICTS

TINY = ("text", "ui1")


def _digest(pairs: list[Pair]) -> str:
    return hashlib.sha256(b"".join(p.a + p.b for p in pairs)).hexdigest()


def test_corpus_is_deterministic_and_labelled() -> None:
    pairs = build_corpus(TINY)
    assert _digest(pairs) == _digest(build_corpus(TINY))
    assert {split_of(p.source) for p in pairs} == {"tune", "held_out"}
    categories = {p.category for p in pairs}
    assert {"lossless", "rotation", "pasted", "unrelated", "ui_word", "antialias"} <= categories
    for pair in pairs:
        assert set(pair.accept) <= set(VERDICTS)
        if pair.accept_pixel is not None:
            assert set(pair.accept_pixel) <= set(VERDICTS)
        width, height = Image.open(io.BytesIO(pair.a)).size
        for x, y, w, h in pair.boxes:
            assert x >= 0 and y >= 0 and x + w <= width and y + h <= height and w * h > 0
        if pair.accept == ("localized_edit",):
            assert pair.boxes, pair.name


def test_split_keeps_every_source_in_one_half() -> None:
    for group in (PHOTO_SOURCES, UI_SOURCES, WEB_SOURCES):
        halves = {split_of(s) for s in group}
        assert halves == {"tune", "held_out"}
    with pytest.raises(KeyError):
        split_of("nope")


def test_browser_rendered_pages_are_labelled_noise_and_word_edits() -> None:
    pairs = build_corpus(("web0",))
    by_category: dict[str, list[Pair]] = {}
    for pair in pairs:
        by_category.setdefault(pair.category, []).append(pair)
    assert set(by_category) == {"web_antialias", "web_word"}
    for pair in by_category["web_antialias"]:
        assert pair.accept == ("identical",) and not pair.boxes and pair.a != pair.b
    for pair in by_category["web_word"]:
        assert pair.accept == ("localized_edit",) and len(pair.boxes) == 1
        (x, y, w, h) = pair.boxes[0]
        a = np.asarray(Image.open(io.BytesIO(pair.a)).convert("RGB")).astype(int)
        b = np.asarray(Image.open(io.BytesIO(pair.b)).convert("RGB")).astype(int)
        inside = np.abs(a - b)[y : y + h, x : x + w].max()
        assert inside > 25  # the edited word differs inside its box
    # Chromium renders the same document to the same pixels, run after run.
    document = "<p style='font: 14px serif'>Billing invoice export</p>"
    first, second = render_html([document], "offset"), render_html([document], "offset")
    assert np.array_equal(first[0], second[0]) and first[0].shape == (320, 480, 3)


def test_box_scores() -> None:
    assert bv.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert bv.iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert bv.iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert bv.covers((0, 0, 20, 20), (5, 5, 10, 10))
    assert not bv.covers((0, 0, 40, 40), (5, 5, 10, 10))  # too large to name the edit


def test_evaluate_scores_an_edited_pair() -> None:
    pair = next(p for p in build_corpus(("text",)) if p.category == "pasted")
    outcome = bv.evaluate(pair, "auto")
    assert outcome.boxes == 1
    assert 0 <= outcome.found_iou <= outcome.found_cover <= 1
    assert outcome.right == (outcome.verdict in pair.accept)
    assert outcome.ms > 0


def test_main_prints_the_tables_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "verdict.json"
    assert bv.main(["--sources", ",".join(TINY), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Right verdicts per category" in text
    assert "auto/held_out" in text and "pixel/tune" in text
    assert "Targets (held-out half, auto mode)" in text
    payload = json.loads(out.read_text())
    assert set(payload["figures"]) == {"auto/tune", "auto/held_out", "pixel/tune", "pixel/held_out"}
    pairs = build_corpus(TINY)
    same_size = sum(p.accept_pixel is not None for p in pairs)
    assert len(payload["outcomes"]) == len(pairs) + same_size
    figures = payload["figures"]["auto/tune"]
    assert 0.0 <= figures["verdict_right"] <= 1.0
    assert np.isfinite(figures["ms_median"])
