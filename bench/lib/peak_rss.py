"""The peak memory of one engine run, measured in a fresh child process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.lib.tools import REPO_ROOT

__all__ = ["child_peak_rss_mb"]


_RSS_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from core.imaging import CompareOptions, compare
a = Path(sys.argv[2]).read_bytes()
b = Path(sys.argv[3]).read_bytes()
if sys.argv[4] != "baseline":
    result = compare(a, b, CompareOptions(mode=sys.argv[4]))
    result.to_dict()
    len(result.heatmap_png)
"""

# A fresh, small launcher runs the measured child and reports its ru_maxrss. It is needed because
# Linux charges a process, at exec, with the peak RSS of the address space it replaces: a child
# spawned (fork or vfork) straight from this benchmark, which holds images and has run the
# reference, would inherit this process's peak. The launcher's own peak (a bare interpreter, about
# 10 MiB) is below any figure measured, so it cannot show through.
_RSS_LAUNCHER = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def child_peak_rss_mb(path_a: Path, path_b: Path, *, mode: str | None) -> float:
    """Peak resident memory of a fresh Python process that runs one comparison.

    The child imports ``core.imaging``, reads both files and, unless ``mode`` is ``None``
    (the baseline), runs one ``compare`` in that mode and renders its result and heatmap.

    Parameters
    ----------
    path_a, path_b : pathlib.Path
        The image files.
    mode : str or None
        Comparison mode, or ``None`` for the baseline (imports and file reads only).

    Returns
    -------
    float
        The child's peak RSS in MiB: ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` taken in a bare
        launcher process whose only child is the measured one.
    """
    child = [sys.executable, "-c", _RSS_CHILD, str(REPO_ROOT), str(path_a), str(path_b)]
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _RSS_LAUNCHER, *child, mode or "baseline"],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"the RSS child failed: {lines[-1] if lines else proc.returncode}")
    return int(proc.stdout.decode().split()[-1]) / 1024.0  # Linux reports KiB
