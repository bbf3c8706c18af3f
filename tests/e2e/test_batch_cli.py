"""``diffall batch submit`` / ``diffall batch wait`` as processes against the live stack (the
``stack`` fixture: API and worker on PostgreSQL, Redis and moto S3): name pairing, the summary,
the gates (exit 1) and bad input (exit 2, the stable code first on stderr)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.images import paste_patch, photo, png
from tests.support.processes import service_env
from tests.support.stack import JOB_TIMEOUT_S, Stack

pytestmark = pytest.mark.slow

DIFFALL = Path(sys.executable).with_name("diffall")


def run(stack: Stack, *args: object) -> subprocess.CompletedProcess[str]:
    """Run the installed ``diffall`` with the stack's URL and key in the environment."""
    env = service_env({"DIFFALL_URL": stack.base_url, "DIFFALL_API_KEY": stack.key})
    argv = [str(DIFFALL), *map(str, args)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def first_token(done: subprocess.CompletedProcess[str]) -> str:
    return done.stderr.split()[0] if done.stderr.split() else ""


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A: same.png, pages/edit.png, only_a.png, notes.txt, .hidden.png;
    B: same.png (identical), pages/edit.png (one patch), only_b.png, notes.txt."""
    root = tmp_path_factory.mktemp("folders")
    dir_a, dir_b = root / "A", root / "B"
    for folder in (dir_a / "pages", dir_b / "pages"):
        folder.mkdir(parents=True)
    same = photo(160, 120, seed=31)
    edit = photo(160, 120, seed=32)
    (dir_a / "same.png").write_bytes(png(same))
    (dir_b / "same.png").write_bytes(png(same))
    (dir_a / "pages" / "edit.png").write_bytes(png(edit))
    (dir_b / "pages" / "edit.png").write_bytes(png(paste_patch(edit, (40, 30, 40, 30), seed=3)))
    (dir_a / "only_a.png").write_bytes(png(photo(64, 48, seed=33)))
    (dir_b / "only_b.png").write_bytes(png(photo(64, 48, seed=34)))
    for folder in (dir_a, dir_b):
        (folder / "notes.txt").write_text("not an image\n")
    (dir_a / ".hidden.png").write_bytes(png(np.zeros((8, 8, 3), np.uint8)))
    return dir_a, dir_b


@pytest.fixture(scope="module")
def submitted(stack: Stack, folders: tuple[Path, Path]) -> dict[str, Any]:
    """``submit --wait --json`` of the two folders, no gate (exit 0 although 2 are unmatched)."""
    dir_a, dir_b = folders
    done = run(stack, "batch", "submit", dir_a, dir_b, "--wait", "--json", "--timeout", 60)
    assert done.returncode == 0, done.stderr
    assert f"warning: 1 only in {dir_a}: only_a.png" in done.stderr
    assert f"warning: 1 only in {dir_b}: only_b.png" in done.stderr
    return dict(json.loads(done.stdout))


def test_submit_pairs_by_name_and_reports_the_rest(submitted: dict[str, Any]) -> None:
    batch = submitted["batch"]
    assert batch["total"] == 2 and batch["completed_at"] is not None
    assert batch["counts"]["succeeded"] == 2
    by_name = {row["name"]: row for row in submitted["comparisons"]}
    assert set(by_name) == {"same.png", "pages/edit.png"}
    assert by_name["same.png"]["verdict"] == "identical" and by_name["same.png"]["ssim"] == 1.0
    assert by_name["pages/edit.png"]["verdict"] == "localized_edit"
    assert submitted["only_in_a"] == ["only_a.png"] and submitted["only_in_b"] == ["only_b.png"]
    assert submitted["unmatched"] == 2
    assert submitted["ignored"] == ["notes.txt"]  # not an image; .hidden.png not even listed
    assert submitted["gate"] == {
        "active": False,
        "passed": True,
        "reasons": [],
        "fail_under": None,
        "fail_on": [],
        "allow_unmatched": False,
    }


def test_wait_gates_on_verdicts_and_ssim(stack: Stack, submitted: dict[str, Any]) -> None:
    batch_id = submitted["batch"]["id"]
    edit_ssim = next(r["ssim"] for r in submitted["comparisons"] if r["name"] == "pages/edit.png")
    threshold = f"{(edit_ssim - 0.01) * 100:.2f}%"  # the edit passes it, just

    passing = run(stack, "batch", "wait", batch_id, "--fail-under", threshold, "--allow-unmatched")
    assert passing.returncode == 0, passing.stderr
    assert "gate: passed" in passing.stdout and "pages/edit.png" in passing.stdout

    on_verdict = run(stack, "batch", "wait", batch_id, "--fail-on", "localized_edit,different")
    assert on_verdict.returncode == 1, on_verdict.stderr
    assert on_verdict.stderr.startswith("gate_failed: 1 localized_edit; 2 in only one folder")
    dir_a = submitted["dir_a"]
    assert f"only in {dir_a}: only_a.png" in on_verdict.stdout  # from the batch metadata

    strict = f"{(edit_ssim + 0.001) * 100:.2f}%"
    on_ssim = run(stack, "batch", "wait", batch_id, "--fail-under", strict, "--allow-unmatched")
    assert on_ssim.returncode == 1
    assert first_token(on_ssim) == "gate_failed:" and "1 SSIM under" in on_ssim.stderr

    unmatched = run(stack, "batch", "wait", batch_id, "--fail-on", "different")
    assert unmatched.returncode == 1 and "2 in only one folder" in unmatched.stderr


def test_submit_wait_with_a_gate_and_a_progress_bar(stack: Stack, tmp_path: Path) -> None:
    dir_a, dir_b = tmp_path / "ref", tmp_path / "new"
    dir_a.mkdir(), dir_b.mkdir()
    for index in range(3):
        image = photo(96, 72, seed=40 + index)
        (dir_a / f"p{index}.png").write_bytes(png(image))
        (dir_b / f"p{index}.png").write_bytes(png(image))
    done = run(
        stack, "batch", "submit", dir_a, dir_b, "--wait", "--fail-on", "localized_edit",
        "--fail-under", "99%", "--progress", "--timeout", JOB_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3/3 done" in done.stderr and "ETA 0:00:00" in done.stderr  # the bar's last state
    assert "gate: passed" in done.stdout and "3 succeeded" in done.stdout


def test_submit_without_wait_then_wait(stack: Stack, folders: tuple[Path, Path]) -> None:
    dir_a, dir_b = folders
    done = run(stack, "batch", "submit", dir_a, dir_b, "--json", "--mode", "pixel")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["pairs"] == 2 and document["batch"]["total"] == 2
    waited = run(stack, "batch", "wait", document["batch"]["id"], "--json", "--no-progress")
    assert waited.returncode == 0, waited.stderr
    rows = json.loads(waited.stdout)["comparisons"]
    assert {row["state"] for row in rows} == {"succeeded"} and len(rows) == 2


@pytest.mark.parametrize(
    ("args", "code", "exit_code"),
    [
        (["batch", "submit", "{missing}", "{b}"], "file_not_found", 2),
        (["batch", "submit", "{a}", "{b}", "--fail-under", "99"], "invalid_options", 2),
        (["batch", "submit", "{a}", "{b}", "--wait", "--fail-on", "blurry"], "invalid_options", 2),
        (["batch", "submit", "{a}", "{b}", "--fail-on", "different"], "invalid_options", 2),
        (["batch", "submit", "{a}", "{b}", "--mode", "fuzzy"], "invalid_options", 2),
        (["batch", "submit", "{a}", "{b}", "--tolerance", "1"], "invalid_options", 2),
        (["batch", "submit", "{a}", "{b}", "--tolerance", "-0.1"], "invalid_options", 2),
        (["batch", "submit", "{a}", "{empty}"], "no_pairs", 2),
        (["batch", "wait", "{unknown}"], "not_found", 2),
        (["batch", "wait", "not-a-uuid"], "usage_error", 2),
        (["batch", "wait"], "usage_error", 2),
        (["batch", "wait", "{unknown}", "--api-key", "dfa_wrong"], "unauthorized", 2),
        (["batch", "wait", "{unknown}", "--url", "http://127.0.0.1:9"], "transport_error", 3),
        (["batch", "wait", "{unknown}", "--timeout", "0"], "invalid_options", 2),
    ],
)
def test_bad_input_is_one_coded_line(
    stack: Stack,
    folders: tuple[Path, Path],
    tmp_path: Path,
    args: list[str],
    code: str,
    exit_code: int,
) -> None:
    dir_a, dir_b = folders
    (tmp_path / "empty").mkdir()
    values = {
        "a": dir_a,
        "b": dir_b,
        "missing": tmp_path / "missing",
        "empty": tmp_path / "empty",
        "unknown": uuid.uuid4(),
    }
    done = run(stack, *(arg.format(**values) for arg in args))
    assert done.returncode == exit_code, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].split()[0] == f"{code}:", done.stderr
    assert stack.key not in done.stderr + done.stdout
