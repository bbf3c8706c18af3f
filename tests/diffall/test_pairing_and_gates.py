"""Folder pairing (diffall/pairing.py) on real folders, and the batch gates (diffall/gates.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.imaging import VERDICTS as ENGINE_VERDICTS
from diffall.gates import VERDICTS, Gate, evaluate, parse_fail_on, parse_threshold
from diffall.pairing import pair_folders


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_pairs_by_relative_name_and_reports_the_rest(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _touch(a, "home.png", "sub/page.JPG", "only_a.webp", "Case.png", "notes.txt", ".DS_Store")
    _touch(a, ".git/x.png", "sub/.hidden.png")
    _touch(b, "home.png", "sub/page.JPG", "only_b.tif", "case.png", "Thumbs.db", "sub/x.gif")
    found = pair_folders(a, b)
    assert [(p.name, p.a, p.b) for p in found.pairs] == [
        ("home.png", a / "home.png", b / "home.png"),
        ("sub/page.JPG", a / "sub/page.JPG", b / "sub/page.JPG"),
    ]
    assert found.only_in_a == ["Case.png", "only_a.webp"]  # names are case-sensitive
    assert found.only_in_b == ["case.png", "only_b.tif", "sub/x.gif"]
    assert found.unmatched == 5
    assert found.ignored == ["Thumbs.db", "notes.txt"]  # not images; hidden ones not listed


def test_a_missing_folder_or_a_file_is_refused(tmp_path: Path) -> None:
    _touch(tmp_path, "file.png")
    with pytest.raises(NotADirectoryError) as info:
        pair_folders(tmp_path, tmp_path / "missing")
    assert info.value.filename == str(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        pair_folders(tmp_path / "file.png", tmp_path)


def test_the_client_knows_the_engine_verdicts() -> None:
    assert set(VERDICTS) == set(ENGINE_VERDICTS)


def test_parsers() -> None:
    assert parse_threshold("98%") == pytest.approx(0.98) and parse_threshold(" 0.5 ") == 0.5
    for bad in ("99", "150%", "-0.1", "high", ""):
        with pytest.raises(ValueError):
            parse_threshold(bad)
    assert parse_fail_on("localized_edit, different,") == {"localized_edit", "different"}
    with pytest.raises(ValueError, match="unknown verdict 'blurry'"):
        parse_fail_on("different,blurry")
    with pytest.raises(ValueError):
        parse_fail_on(" , ")


def _ok(ssim: float, verdict: str) -> dict[str, Any]:
    return {"state": "succeeded", "result": {"ssim": ssim, "verdict": verdict}}


BATCH = [
    _ok(1.0, "identical"),
    _ok(0.97, "localized_edit"),
    _ok(0.95, "localized_edit"),
    {"state": "failed", "result": None, "error": {"code": "corrupt_image"}},
]


def test_no_gate_passes_everything() -> None:
    outcome = evaluate(Gate(), BATCH, unmatched=3, refused=1)
    assert outcome.passed and outcome.reasons == []


def test_gates_count_each_reason() -> None:
    gate = Gate(fail_under=0.96, fail_on=frozenset({"localized_edit"}))
    outcome = evaluate(gate, BATCH, unmatched=2, refused=1)
    assert not outcome.passed
    assert outcome.reasons == [
        "1 SSIM under 96.00 %",
        "1 failed",
        "2 localized_edit",
        "1 refused at submission",
        "2 in only one folder",
    ]
    assert gate.flags(BATCH[2]) == ["SSIM under 96.00 %", "localized_edit"]
    assert gate.flags(BATCH[0]) == []


def test_a_met_gate_and_allowed_unmatched_images() -> None:
    gate = Gate(fail_under=0.9, allow_unmatched=True)
    assert evaluate(gate, BATCH[:3], unmatched=4, refused=0).passed
    assert not evaluate(Gate(fail_under=0.9), BATCH[:3], unmatched=4, refused=0).passed
