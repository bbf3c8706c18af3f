"""The ``diffall compare`` command: output, exit codes (0 ok, 1 gate, 2 bad input) and files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from core.imaging import compare
from diffall.cli import app, parse_rect, parse_threshold
from tests.support.images import paste_patch, photo, png

runner = CliRunner()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    a = photo(320, 240, seed=1)
    b = paste_patch(a, (100, 80, 60, 50))
    pa, pb = root / "a.png", root / "b.png"
    pa.write_bytes(png(a))
    pb.write_bytes(png(b))
    return pa, pb


def test_json_output_is_the_contract(pair: tuple[Path, Path]) -> None:
    pa, pb = pair
    result = runner.invoke(app, ["compare", str(pa), str(pb), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    expected = compare(pa.read_bytes(), pb.read_bytes()).to_dict()
    printed.pop("timings_ms"), expected.pop("timings_ms")
    assert printed == expected


def test_human_output_and_heatmap(pair: tuple[Path, Path], tmp_path: Path) -> None:
    pa, pb = pair
    out = tmp_path / "heat.png"
    result = runner.invoke(app, ["compare", str(pa), str(pb), "--heatmap", str(out)])
    assert result.exit_code == 0, result.output
    assert "localized_edit" in result.stdout
    assert "SSIM" in result.stdout and "region x=" in result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_legend_written_with_the_tolerance_marked(pair: tuple[Path, Path], tmp_path: Path) -> None:
    pa, pb = pair
    out = tmp_path / "legend.svg"
    argv = ["compare", str(pa), str(pb), "--tolerance", "0.2", "--legend", str(out)]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    svg = out.read_text(encoding="utf-8")
    assert svg.startswith("<svg ") and "tolerance 20 % (51.0 levels)" in svg
    missing = runner.invoke(app, [*argv[:-1], str(tmp_path / "no" / "dir.svg")])
    assert missing.exit_code == 2 and "output_unwritable" in missing.output


def test_fail_under_gate(pair: tuple[Path, Path]) -> None:
    pa, pb = pair
    assert runner.invoke(app, ["compare", str(pa), str(pb), "--fail-under", "99.9%"]).exit_code == 1
    assert runner.invoke(app, ["compare", str(pa), str(pb), "--fail-under", "0.5"]).exit_code == 0
    assert runner.invoke(app, ["compare", str(pa), str(pa), "--fail-under", "100%"]).exit_code == 0


def test_antialiasing_option_counts_rendering_noise_when_off() -> None:
    samples = Path(__file__).resolve().parents[2] / "samples"
    argv = ["compare", str(samples / "reference.png"), str(samples / "candidate.jpg"), "--json"]
    default = json.loads(runner.invoke(app, argv).stdout)
    counted = json.loads(runner.invoke(app, [*argv, "--no-antialiasing"]).stdout)
    assert default["antialiased_pixels"] > 0
    assert counted["antialiased_pixels"] == 0
    assert counted["changed_ratio"] > default["changed_ratio"]
    assert counted["ssim"] == default["ssim"]  # the option changes what counts, not the scores


def test_ignore_option(pair: tuple[Path, Path]) -> None:
    pa, pb = pair
    result = runner.invoke(
        app, ["compare", str(pa), str(pb), "--json", "--ignore", "90,70,80,70", "--fail-under", "1"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verdict"] == "identical"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.png", "{b}"], "file_not_found", "missing.png: no such file"),
        (["{a}", "{folder}"], "file_not_found", "is a directory"),
        (["{a}", "{empty}"], "empty_file", "empty.png"),
        (["{a}", "{text}"], "unsupported_format", "notes.txt"),
        (["{a}", "{b}", "--mode", "fuzzy"], "invalid_options", "fuzzy"),
        (["{a}", "{b}", "--ignore", "1,2,3"], "invalid_options", "X,Y,W,H"),
        (["{a}", "{b}", "--ignore", "1,2,3,x"], "invalid_options", "four integers"),
        (["{a}", "{b}", "--fail-under", "150%"], "invalid_options", "within 0..1"),
        (["{a}", "{b}", "--fail-under", "99"], "invalid_options", "within 0..1"),
        (["{a}", "{b}", "--fail-under", "high"], "invalid_options", "0.98 or 98%"),
        (["{a}", "{small}", "--mode", "pixel"], "size_mismatch", "size"),
        (["{a}", "{b}", "--heatmap", "{folder}/no/such/dir.png"], "output_unwritable", "cannot"),
        (["{a}"], "usage_error", "Missing argument"),
        (["{a}", "{b}", "--bogus"], "usage_error", "--bogus"),
        (["{a}", "{b}", "--tolerance", "abc"], "usage_error", "--tolerance"),
    ],
)
def test_bad_input_exits_2_with_one_coded_line(
    pair: tuple[Path, Path], tmp_path: Path, args: list[str], code: str, message: str
) -> None:
    pa, pb = pair
    files = {
        "a": pa,
        "b": pb,
        "empty": tmp_path / "empty.png",
        "text": tmp_path / "notes.txt",
        "small": tmp_path / "small.png",
        "folder": tmp_path,
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("not an image\n")
    files["small"].write_bytes(png(np.zeros((10, 10, 3), np.uint8)))
    argv = ["compare", *(a.format(**{k: str(v) for k, v in files.items()}) for a in args)]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].split()[0] == f"{code}:" and message in lines[0], lines[0]


@pytest.mark.parametrize(
    ("argv", "help_of"),
    [([], "diffall [OPTIONS] COMMAND"), (["keys"], "diffall keys"), (["nosuch"], None)],
)
def test_a_missing_or_unknown_command_is_a_usage_error(
    argv: list[str], help_of: str | None
) -> None:
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert result.stderr.split()[0] == "usage_error:" and len(result.stderr.splitlines()) == 1
    if help_of is not None:
        assert help_of in result.stdout  # the help, on stdout, as --help prints it


def test_gate_failure_is_coded_and_exits_1(pair: tuple[Path, Path]) -> None:
    pa, pb = pair
    result = runner.invoke(app, ["compare", str(pa), str(pb), "--fail-under", "99.9%"])
    assert result.exit_code == 1
    assert result.stderr.startswith("gate_failed: SSIM ") and "99.90 %" in result.stderr
    assert "localized_edit" in result.stdout  # the report is still printed


def test_parsers() -> None:
    assert parse_rect("1,2,3,4") == (1, 2, 3, 4)
    assert parse_threshold("98%") == pytest.approx(0.98)
    assert parse_threshold("0.5") == 0.5
    with pytest.raises(ValueError):
        parse_threshold("abc")


def test_entry_point_runs_as_a_process(pair: tuple[Path, Path]) -> None:
    pa, pb = pair
    diffall = Path(sys.executable).with_name("diffall")
    done = subprocess.run(
        [str(diffall), "compare", str(pa), str(pb), "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verdict"] == "localized_edit"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["compare", "nowhere.png", "{a}"], "file_not_found"),
        (["compare", "{a}", "{b}", "--fail-under", "99"], "invalid_options"),
        (["compare", "{a}", "{b}", "--no-such-option"], "usage_error"),
        ([], "usage_error"),
    ],
)
def test_the_installed_command_prints_the_code_first(
    pair: tuple[Path, Path], args: list[str], code: str
) -> None:
    pa, pb = pair
    diffall = Path(sys.executable).with_name("diffall")
    argv = [str(diffall), *(a.format(a=pa, b=pb) for a in args)]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.split()[0] == f"{code}:", done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
