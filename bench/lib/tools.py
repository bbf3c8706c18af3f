"""External comparison tools the engine benchmarks time beside ours (odiff, ImageMagick's
``compare``), found on this machine, and the machine's description with their versions."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.lib.machine import machine_info as lib_machine_info

#: The repository root (its ``node_modules/.bin`` is searched for odiff).
REPO_ROOT = Path(__file__).resolve().parents[2]
ROW_ODIFF = "odiff"
ROW_ODIFF_COMMAND = "odiff_command"
ROW_MAGICK = "imagemagick"


@dataclass
class ExternalTool:
    """A command line timed as a subprocess on the pair's files.

    ``argv`` holds ``{a}``, ``{b}`` and ``{out}`` placeholders for the two inputs and the diff
    image it writes; ``ok_codes`` are the exit codes that mean "compared" (differences included).
    """

    row: str
    argv: list[str]
    ok_codes: tuple[int, ...]
    version: str
    note: str = ""

    def command(self, a: Path, b: Path, out: Path) -> list[str]:
        """The argument vector for inputs ``a``, ``b`` and diff output ``out``."""
        return [arg.format(a=a, b=b, out=out) for arg in self.argv]

    def run(self, a: Path, b: Path, out: Path) -> None:
        """Run the tool once; raise ``RuntimeError`` on an unexpected exit code."""
        proc = subprocess.run(
            self.command(a, b, out),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if proc.returncode not in self.ok_codes:
            message = proc.stderr.decode(errors="replace").strip().splitlines()
            raise RuntimeError(
                f"{self.argv[0]} exited {proc.returncode}: {message[-1] if message else ''}"
            )


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (proc.stdout or proc.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else ""


def _odiff_native(command: Path) -> Path | None:
    """The platform binary behind the npm ``odiff`` command (a node script), if found."""
    package = command.resolve().parent.parent  # .../odiff-bin/bin/odiff -> .../odiff-bin
    candidates = [*package.glob("node_modules/@odiff/*/odiff")]
    candidates += [*package.parent.glob("@odiff/*/odiff")]  # hoisted: node_modules/@odiff/...
    for candidate in sorted(candidates):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_odiff(search_from: Path | None = None) -> list[ExternalTool]:
    """Find odiff (npm ``odiff-bin``) on PATH or in a ``node_modules/.bin`` folder.

    Parameters
    ----------
    search_from : pathlib.Path, optional
        Folder whose ``node_modules/.bin`` is searched after PATH (default: the repository root).

    Returns
    -------
    list of ExternalTool
        Empty when absent. Otherwise the native binary (row ``odiff``, used for the target) when
        it can be found behind the npm command, and the npm command itself (row
        ``odiff_command``, whose node start-up is part of what a user pays).
    """
    found = shutil.which("odiff")
    local = (search_from or REPO_ROOT) / "node_modules" / ".bin" / "odiff"
    if found is None and os.access(local, os.X_OK):
        found = str(local)
    if found is None:
        return []
    command = Path(found)
    ok = (0, 22)  # 0: images match, 22: pixel differences found
    tools: list[ExternalTool] = []
    with command.open("rb") as fh:
        is_script = fh.read(2) == b"#!"
    native = _odiff_native(command) if is_script else command
    if native is not None:
        version = _first_line([str(native), "--version"])
        tools.append(ExternalTool(ROW_ODIFF, [str(native), "{a}", "{b}", "{out}"], ok, version))
    if is_script:
        version = _first_line([str(command), "--version"])
        tools.append(
            ExternalTool(ROW_ODIFF_COMMAND, [str(command), "{a}", "{b}", "{out}"], ok, version)
        )
    return tools


def find_imagemagick() -> ExternalTool | None:
    """Find ImageMagick's ``compare`` (``magick compare`` for version 7).

    Returns
    -------
    ExternalTool or None
        ``compare -metric SSIM A B OUT`` where the installed version lists the SSIM metric,
        else ``-metric PSNR``; ``None`` when ImageMagick is absent.
    """
    magick = shutil.which("magick")
    prefix = [magick, "compare"] if magick else []
    if not prefix:
        plain = shutil.which("compare")
        if plain is None:
            return None
        prefix = [plain]
    version = _first_line([*prefix, "-version"])
    if "ImageMagick" not in version:
        return None
    try:
        listed = subprocess.run(
            [*prefix, "-list", "metric"], capture_output=True, check=False, timeout=30
        ).stdout.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    metric = "SSIM" if "SSIM" in listed.split() else "PSNR"
    note = "" if metric == "SSIM" else "this ImageMagick has no SSIM metric: PSNR"
    return ExternalTool(
        ROW_MAGICK,
        [*prefix, "-metric", metric, "{a}", "{b}", "{out}"],
        (0, 1),  # 0: similar, 1: dissimilar, 2: error
        version.removeprefix("Version: "),
        note,
    )


def find_external_tools() -> list[ExternalTool]:
    """Every external comparison tool found on this machine (possibly none)."""
    tools = find_odiff()
    magick = find_imagemagick()
    if magick is not None:
        tools.append(magick)
    return tools


def machine_info(tools: Sequence[ExternalTool] = ()) -> dict[str, Any]:
    """Describe the machine and library versions the figures were taken on (and the tools)."""
    return {**lib_machine_info(), "tools": {t.row: t.version for t in tools}}
