"""Memory benchmark: peak RSS of one comparison job, the way a worker runs it.

Run from the repository root::

    .venv/bin/python -m bench.bench_memory [--sizes 10mp,50mp,100mp] [--json OUT]

For each size a deterministic photographic pair (``bench.images.photographic_pair``: B is A
with a pasted patch, a localised edit, re-compressed once as JPEG) is written as two 8-bit RGB
PNG files and stored as a tenant's images in a fresh service set-up (a SQLite database migrated
for real, a local object store; ``core.services.images.store_image``, so width and height come
from the headers as at upload), with one ``queued`` comparison (default options). Then a FRESH
Python process per size runs that job as the worker's task does:
``core.services.runs.run_comparison`` on the stored images, through the worker's
``CachingObjectStore`` (``worker.image_cache_mb``) and the settings' limits, heatmap written
to storage, result written to the database. The child reports its own peak RSS (``VmHWM``, see
:func:`_rss_bytes`) after its imports and set-up (the baseline) and after the job (the peak),
so the peak is that one job's process and nothing else.

The table: size, the two images decoded at 8 bits (``w * h * 3 * 2`` bytes), baseline and peak
RSS, the ratio peak / decoded (target <= 3x) and, at 100 MP, whether the peak is <= 1.5 GB
(1.5 x 10^9 bytes). Nothing is optimised here: it measures.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Default sizes, in megapixels (4:3 pairs).
DEFAULT_SIZES = "10mp,50mp,100mp"
#: Target: peak RSS at most this many times the two decoded 8-bit images.
TARGET_RATIO = 3.0
#: Target at 100 MP: peak RSS at most this many bytes (1.5 GB).
TARGET_100MP_BYTES = 1_500_000_000
#: Seed of every generated pair.
SEED = 7
#: ``limits.max_upload_bytes`` of the set-up (a 100 MP photographic PNG is ~0.2 GB).
STORE_MAX_UPLOAD_BYTES = 2 << 30
#: Seconds one child job may take before the benchmark gives up.
CHILD_TIMEOUT_S = 3600


def parse_sizes(text: str) -> list[tuple[str, int, int]]:
    """``"10mp,50mp,64x48"`` -> ``[(name, width, height), ...]``; ``Nmp`` is a 4:3 pair of at
    most N x 10^6 pixels, ``WxH`` is exact (each side >= 16). ``ValueError`` otherwise."""
    sizes: list[tuple[str, int, int]] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item.endswith("mp"):
            pixels = float(item[:-2]) * 1_000_000
            height = math.floor(math.sqrt(pixels * 3 / 4))
            width = math.floor(pixels / height)
        elif "x" in item:
            w, h = item.split("x", 1)
            width, height = int(w), int(h)
        else:
            raise ValueError(f"size {raw!r}: give Nmp or WxH")
        if width < 16 or height < 16:
            raise ValueError(f"size {raw!r}: each side must be at least 16 px")
        sizes.append((item, width, height))
    if not sizes:
        raise ValueError("no sizes given")
    return sizes


@dataclass
class Row:
    """One size's figures, in bytes and seconds (RSS: the child's ``VmHWM``)."""

    size: str
    width: int
    height: int
    decoded_bytes: int
    baseline_rss_bytes: int
    peak_rss_bytes: int
    job_s: float
    state: str
    error_code: str | None

    @property
    def ratio(self) -> float:
        """Peak RSS over the two decoded images."""
        return self.peak_rss_bytes / self.decoded_bytes

    @property
    def ratio_above_baseline(self) -> float:
        """(Peak - baseline) over the two decoded images: the job's own growth."""
        return (self.peak_rss_bytes - self.baseline_rss_bytes) / self.decoded_bytes


def _settings(data_dir: Path, job_memory_mb: int | None = None) -> Any:
    """The service settings of the benchmark's set-up (SQLite and local storage in data_dir).

    ``limits.max_upload_bytes`` is :data:`STORE_MAX_UPLOAD_BYTES` for the API's check and the
    worker's alike (a 100 MP photographic PNG is far above the 50 MiB default: an operator
    accepting such files raises it for both); ``job_memory_mb`` overrides
    ``limits.job_memory_mb`` (None: the service's default, this machine's share).
    """
    from core.config import Settings

    limits: dict[str, Any] = {"max_upload_bytes": STORE_MAX_UPLOAD_BYTES}
    if job_memory_mb is not None:
        limits["job_memory_mb"] = job_memory_mb
    extra: dict[str, Any] = {"limits": limits}
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        env="test",
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'diffall.db'}",
        storage={"backend": "local", "local_dir": data_dir / "objects"},
        **extra,
    )


class _NoBroker:
    """A ``JobQueue`` that sends nothing: the benchmark runs the job itself, in a child."""

    def enqueue_comparison(self, comparison_id: uuid.UUID, queue: Any) -> None:
        """Send nothing."""

    def ping(self) -> None:
        """Always reachable."""


def prepare(data_dir: Path, width: int, height: int, job_memory_mb: int | None = None) -> uuid.UUID:
    """Write the pair, store it as a tenant's images, create one queued comparison; its id."""
    import cv2

    from bench.images import photographic_pair, write_png
    from core.db.session import get_sessionmaker, upgrade_database
    from core.services import comparisons, images, keys
    from core.services.factories import store_from_settings

    settings = _settings(data_dir, job_memory_mb)
    upgrade_database(settings.database_url_resolved)
    sessions = get_sessionmaker(settings.database_url_resolved)
    store = store_from_settings(settings)
    a, b = photographic_pair(width, height, seed=SEED)
    paths = [data_dir / "a.png", data_dir / "b.png"]
    for path, img in zip(paths, (a, b), strict=True):
        write_png(path, img)
    del a, b
    assert cv2.imread(str(paths[0]), cv2.IMREAD_UNCHANGED).dtype.itemsize == 1  # 8-bit
    limits = settings.limits
    with sessions() as session:
        keys.create_key(session, tenant_name="bench")
    with sessions() as session:
        from core.db.models import Tenant

        tenant = session.query(Tenant).one()
        stored = [
            images.store_image(
                session, store, tenant_id=tenant.id, data=path.read_bytes(), limits=limits
            )[0].id
            for path in paths
        ]
        created = comparisons.create_comparison(
            session,
            _NoBroker(),
            tenant_id=tenant.id,
            image_a_id=stored[0],
            image_b_id=stored[1],
            options=None,
            metadata=None,
            webhook_url=None,
            big_image_pixels=settings.worker.big_image_pixels,
        )
    return created.id


def _rss_bytes() -> int:
    """This process's peak RSS so far, in bytes: ``VmHWM`` of ``/proc/self/status``.

    Not ``ru_maxrss``: Linux charges a process, at exec, with the peak RSS of the address space
    it replaces, so a child of the benchmark (which held the generated images) would report the
    benchmark's own peak; ``VmHWM`` belongs to the new address space alone. Elsewhere than
    Linux, ``ru_maxrss`` (bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def child(
    data_dir: Path, comparison_id: uuid.UUID, job_memory_mb: int | None = None
) -> dict[str, Any]:
    """Run the job as ``worker.tasks.run_comparison`` does; report RSS before and after."""
    from core.db.models import Comparison
    from core.db.session import get_sessionmaker
    from core.services import runs
    from core.services.factories import store_from_settings
    from core.storage.cache import CachingObjectStore

    settings = _settings(data_dir, job_memory_mb)
    sessions = get_sessionmaker(settings.database_url_resolved)
    store = CachingObjectStore(
        store_from_settings(settings), max_bytes=settings.worker.image_cache_mb * 1024 * 1024
    )
    with sessions() as session:  # connect and load the models, as a warm worker has
        session.get_one(Comparison, comparison_id)
    baseline = _rss_bytes()
    start = time.perf_counter()
    runs.run_comparison(
        sessions,
        store,
        comparison_id=comparison_id,
        max_crashes=settings.worker.max_attempts,
        limits=settings.limits,
    )
    job_s = time.perf_counter() - start
    peak = _rss_bytes()
    with sessions() as session:
        row = session.get_one(Comparison, comparison_id)
        state, code, message = row.state.value, row.error_code, row.error_message
    if message:
        print(f"{code}: {message}", file=sys.stderr)
    return {
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
        "job_s": job_s,
        "state": state,
        "error_code": code,
    }


def measure(
    name: str, width: int, height: int, work: Path, job_memory_mb: int | None = None
) -> Row:
    """Prepare one size in ``work`` and run its job in a fresh child process."""
    data_dir = work / name
    data_dir.mkdir(parents=True)
    comparison_id = prepare(data_dir, width, height, job_memory_mb)
    budget = [] if job_memory_mb is None else ["--job-memory-mb", str(job_memory_mb)]
    argv = ["-m", "bench.bench_memory", *budget, "--child", str(data_dir), str(comparison_id)]
    done = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the job of {name} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return Row(
        size=name,
        width=width,
        height=height,
        decoded_bytes=width * height * 3 * 2,
        **figures,
    )


def _mb(value: int) -> str:
    return f"{value / 1e6:,.0f} MB"


def render(rows: Sequence[Row]) -> str:
    """The Markdown table of the rows."""
    lines = [
        "| size | pixels | decoded A+B (8-bit) | baseline RSS | peak RSS | peak / decoded "
        "(target <= 3x) | (peak - baseline) / decoded | <= 1.5 GB at 100 MP | job s | state |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        pixels = row.width * row.height
        at_100 = (
            ("yes" if row.peak_rss_bytes <= TARGET_100MP_BYTES else "no")
            if pixels >= 99_000_000
            else "-"
        )
        state = row.state if row.error_code is None else f"{row.state} ({row.error_code})"
        if row.state != "succeeded":  # refused or failed: no engine peak to judge
            lines.append(
                f"| {row.size} | {row.width}x{row.height} | {_mb(row.decoded_bytes)} | "
                f"{_mb(row.baseline_rss_bytes)} | {_mb(row.peak_rss_bytes)} | n/a | n/a | n/a | "
                f"{row.job_s:.1f} | {state} |"
            )
            continue
        lines.append(
            f"| {row.size} | {row.width}x{row.height} | {_mb(row.decoded_bytes)} | "
            f"{_mb(row.baseline_rss_bytes)} | {_mb(row.peak_rss_bytes)} | {row.ratio:.2f}x "
            f"({'met' if row.ratio <= TARGET_RATIO else 'not met'}) | "
            f"{row.ratio_above_baseline:.2f}x | {at_100} | {row.job_s:.1f} | {state} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with ``--child``, one job); print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"default {DEFAULT_SIZES}")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--job-memory-mb",
        type=int,
        help="limits.job_memory_mb of the jobs (default: the service's default, this machine's "
        "share; a pair above it fails image_too_large, as in the service)",
    )
    parser.add_argument(
        "--child", nargs=2, metavar=("DATA_DIR", "COMPARISON_ID"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        figures = child(Path(args.child[0]), uuid.UUID(args.child[1]), args.job_memory_mb)
        print(json.dumps(figures), flush=True)
        return 0
    sizes = parse_sizes(args.sizes)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="diffall-bench-memory-") as tmp:
        for name, width, height in sizes:
            print(f"{name}: {width}x{height} ...", file=sys.stderr, flush=True)
            rows.append(measure(name, width, height, Path(tmp), args.job_memory_mb))
    print(render(rows), end="")
    budget = _settings(Path(tempfile.gettempdir()), args.job_memory_mb).limits.job_memory_mb
    print(f"\nlimits.job_memory_mb of the jobs: {budget} MiB")
    from bench.lib.machine import load_average

    print(f"load average at the end: {load_average()} (shared machine)")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) | {"ratio": r.ratio} for r in rows], indent=2))
    return 0 if all(r.state == "succeeded" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
