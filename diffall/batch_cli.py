"""``diffall batch submit DIR_A DIR_B`` and ``diffall batch wait ID``: a whole delivery compared
on a DiffALL server, and gated.

``submit`` pairs the two folders by file name (diffall/pairing.py), uploads each image once
(:data:`UPLOAD_THREADS` at a time), submits one batch and, with ``--wait``, waits for it like
``batch wait``. ``wait`` shows a progress bar on a terminal, then a summary table (or
``--json``), and applies the gates (diffall/gates.py): exit 1 with a ``gate_failed`` line when
one is not met. The server and the key come from ``--url`` / ``--api-key`` or the environment
(``DIFFALL_URL``, ``DIFFALL_API_KEY``: ``diffall.client.URL_ENV`` / ``API_KEY_ENV``, as
``DiffallClient.from_env`` reads them). Errors: diffall/cli_errors.py.

What ``submit`` knows and ``wait`` needs later (the folders, the files in only one of them, the
pairs refused at upload) travels in the batch's ``metadata`` under :data:`METADATA_KEY`; each
comparison's ``metadata`` holds its file ``name``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from diffall.cli_errors import (
    EXIT_GATE_FAILED,
    FILE_NOT_FOUND,
    GATE_FAILED,
    INVALID_OPTIONS,
    USAGE_ERROR,
    fail,
)
from diffall.client import API_KEY_ENV, DEFAULT_URL, URL_ENV, DiffallClient, DiffallError
from diffall.gates import Gate, GateOutcome, evaluate, parse_fail_on, parse_threshold
from diffall.pairing import FolderPairs, pair_folders
from diffall.polling import RETRY_STATUSES, Backoff

__all__ = ["METADATA_KEY", "batch_app"]

#: Key of the batch metadata written by ``submit``.
METADATA_KEY: Final = "diffall_cli"
#: Names kept per list in the batch metadata (the counts are exact); rows in the summary table.
MAX_LISTED: Final = 50
#: Uploads in flight at once.
UPLOAD_THREADS: Final = 8
#: Seconds allowed per HTTP request.
REQUEST_TIMEOUT_S: Final = 60.0
#: Tries of one request answered 429, 502, 503 or 504 (rate limited, all upload slots taken),
#: each after its Retry-After (at least a delay growing from 0.5 s to 30 s).
MAX_ATTEMPTS: Final = 8
#: Upload answers that refuse one image (it becomes a refused pair; the others go on).
_IMAGE_REFUSALS: Final = frozenset({413, 415, 422})
_MODES: Final = ("auto", "pixel", "align")

batch_app = typer.Typer(
    help="Compare whole folders on a DiffALL server and gate on the result.",
    no_args_is_help=True,
)

Url = Annotated[
    str,
    typer.Option("--url", envvar=URL_ENV, help="The server's base URL.", show_envvar=True),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar=API_KEY_ENV,
        help="An API key (prefer the environment variable: options show in process lists).",
        show_envvar=True,
        show_default=False,
    ),
]
FailUnder = Annotated[
    str | None,
    typer.Option(help="Exit 1 unless every comparison's SSIM is at least this (0.98 or 98%)."),
]
FailOn = Annotated[
    str | None,
    typer.Option(
        help="Exit 1 if any comparison has one of these verdicts (comma-separated, e.g. "
        "localized_edit,different)."
    ),
]
AllowUnmatched = Annotated[
    bool,
    typer.Option(
        "--allow-unmatched",
        help="Let images present in only one folder pass the gates (still reported).",
    ),
]
Timeout = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for the batch (exit 3 after).")
]
ShowProgress = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="Progress bar on stderr (default: when stderr is a terminal).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the outcome as JSON on stdout.")]
#: The engine's ``antialiasing`` option (``diffall compare`` and ``diffall batch submit``).
Antialiasing = Annotated[
    bool,
    typer.Option(help="Leave anti-aliasing and resampling noise out of the changes (the default)."),
]


@dataclass
class Submission:
    """What ``submit`` records about the folders, in the batch metadata (lists capped)."""

    dir_a: str
    dir_b: str
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    unmatched: int = 0
    ignored: int = 0
    refused: list[dict[str, str]] = field(default_factory=list)
    refused_count: int = 0

    def to_metadata(self) -> dict[str, Any]:
        """The JSON object stored under :data:`METADATA_KEY` (lists cut to MAX_LISTED)."""
        data = asdict(self)
        for key in ("only_in_a", "only_in_b", "refused"):
            data[key] = data[key][:MAX_LISTED]
        return data

    @classmethod
    def from_batch(cls, batch: Mapping[str, Any]) -> Submission | None:
        """Read it back from a batch resource (None for a batch ``submit`` did not make)."""
        data = (batch.get("metadata") or {}).get(METADATA_KEY)
        if not isinstance(data, dict):
            return None
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        try:
            return cls(**known)
        except TypeError:
            return None


def _client(url: str, api_key: str | None) -> DiffallClient:
    """A client for ``url``; ``usage_error`` without a key."""
    if not api_key:
        fail(USAGE_ERROR, f"an API key is needed: --api-key or {API_KEY_ENV}")
    return DiffallClient(url, api_key, timeout=REQUEST_TIMEOUT_S)


def _gate(fail_under: str | None, fail_on: str | None, allow_unmatched: bool) -> Gate:
    """The gates from the options; ``invalid_options`` when malformed."""
    try:
        threshold = parse_threshold(fail_under) if fail_under is not None else None
        verdicts = parse_fail_on(fail_on) if fail_on is not None else frozenset()
    except ValueError as exc:
        fail(INVALID_OPTIONS, str(exc))
    return Gate(fail_under=threshold, fail_on=verdicts, allow_unmatched=allow_unmatched)


def _check_timeout(timeout_s: float) -> None:
    if not timeout_s > 0:
        fail(INVALID_OPTIONS, f"--timeout must be > 0 seconds, got {timeout_s:g}")


def _engine_options(mode: str, tolerance: float | None, antialiasing: bool) -> dict[str, Any]:
    """The per-pair options; ``invalid_options`` for a bad mode or tolerance."""
    if mode not in _MODES:
        fail(INVALID_OPTIONS, f"--mode must be {', '.join(_MODES)}, not {mode!r}")
    options: dict[str, Any] = {"mode": mode, "antialiasing": antialiasing}
    if tolerance is not None:
        if not 0.0 <= tolerance < 1.0:  # the server's rule: [0, 1)
            fail(INVALID_OPTIONS, f"--tolerance must be within [0, 1), got {tolerance:g}")
        options["tolerance"] = tolerance
    return options


T = TypeVar("T")


def with_retries(call: Callable[[], T]) -> T:
    """``call()``, tried again (up to :data:`MAX_ATTEMPTS` in all) while the server answers
    "later" (:data:`~diffall.polling.RETRY_STATUSES`), after its ``Retry-After``. Only for
    requests that are safe to repeat: an upload (stored by content) or a POST with an
    ``Idempotency-Key``."""
    backoff = Backoff(0.5, max_s=30.0)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return call()
        except DiffallError as exc:
            if exc.status not in RETRY_STATUSES or attempt == MAX_ATTEMPTS:
                raise
            time.sleep(backoff.next_delay(exc.retry_after_s))
    raise AssertionError("unreachable")  # pragma: no cover


def _upload_all(
    client: DiffallClient, paths: Sequence[Path]
) -> tuple[dict[Path, str], dict[Path, tuple[str, str]]]:
    """Upload each path once, :data:`UPLOAD_THREADS` at a time: ids by path, and the refusals
    by path (code, message). Errors other than a refused image are raised."""

    def upload(path: Path) -> tuple[Path, str | None, tuple[str, str] | None]:
        try:
            return path, str(with_retries(lambda: client.upload_image(path))["id"]), None
        except OSError as exc:
            return path, None, ("file_unreadable", f"{exc.strerror or exc}")
        except DiffallError as exc:
            if exc.status not in _IMAGE_REFUSALS:
                raise
            return path, None, (exc.code, exc.detail)

    ids: dict[Path, str] = {}
    refused: dict[Path, tuple[str, str]] = {}
    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        for path, image_id, refusal in pool.map(upload, paths):
            if image_id is not None:
                ids[path] = image_id
            elif refusal is not None:
                refused[path] = refusal
    return ids, refused


def _warn_unmatched(found: FolderPairs, dir_a: Path, dir_b: Path) -> None:
    """Name the images in only one folder on stderr (never dropped silently)."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for folder, names in ((dir_a, found.only_in_a), (dir_b, found.only_in_b)):
        if names:
            shown = ", ".join(names[:MAX_LISTED]) + (" ..." if len(names) > MAX_LISTED else "")
            err.print(f"warning: {len(names)} only in {folder}: {shown}", markup=False)


@batch_app.command(
    "submit",
    help="Pair DIR_A and DIR_B by file name (recursively) and submit every pair as one batch. "
    "Images in only one folder are listed on stderr and in the summary, and fail the gates "
    "unless --allow-unmatched. Without --wait, prints the batch: wait for it with "
    "`diffall batch wait ID`.",
)
def submit_command(
    dir_a: Annotated[Path, typer.Argument(help="Folder of reference images A.")],
    dir_b: Annotated[Path, typer.Argument(help="Folder of candidate images B (same names).")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    mode: Annotated[str, typer.Option(help="auto, pixel or align (for every pair).")] = "auto",
    tolerance: Annotated[
        float | None,
        typer.Option(help="Noise tolerance in [0, 1) of the data range (default 0.1)."),
    ] = None,
    antialiasing: Antialiasing = True,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the batch, then gate.")] = False,
    timeout_s: Timeout = 3600.0,
    fail_under: FailUnder = None,
    fail_on: FailOn = None,
    allow_unmatched: AllowUnmatched = False,
    progress: ShowProgress = None,
    as_json: AsJson = False,
) -> None:
    """Pair two folders by file name, upload, submit one batch; with --wait, wait and gate."""
    gate = _gate(fail_under, fail_on, allow_unmatched)
    if gate.active and not wait:
        fail(INVALID_OPTIONS, "--fail-under and --fail-on need --wait (or: diffall batch wait ID)")
    _check_timeout(timeout_s)
    options = _engine_options(mode, tolerance, antialiasing)
    try:
        found = pair_folders(dir_a, dir_b)
    except NotADirectoryError as exc:
        fail(FILE_NOT_FOUND, f"{exc.filename}: no such folder")
    _warn_unmatched(found, dir_a, dir_b)
    if not found.pairs:
        fail("no_pairs", f"no image name is in both {dir_a} and {dir_b}")
    with _client(url, api_key) as client:
        paths = sorted({p for pair in found.pairs for p in (pair.a, pair.b)})
        ids, refused_paths = _upload_all(client, paths)
        submission = Submission(
            dir_a=str(dir_a),
            dir_b=str(dir_b),
            only_in_a=found.only_in_a,
            only_in_b=found.only_in_b,
            unmatched=found.unmatched,
            ignored=len(found.ignored),
        )
        items, names = [], []
        for pair in found.pairs:
            refusal = refused_paths.get(pair.a) or refused_paths.get(pair.b)
            if refusal is not None:
                submission.refused.append(
                    {"name": pair.name, "code": refusal[0], "message": refusal[1]}
                )
                continue
            names.append(pair.name)
            items.append(
                {
                    "a": ids[pair.a],
                    "b": ids[pair.b],
                    "options": options,
                    "metadata": {"name": pair.name},
                }
            )
        if not items:
            first = submission.refused[0]
            fail("no_pairs", f"every pair was refused, e.g. {first['name']}: {first['code']}")
        submission.refused_count = len(submission.refused)
        key = f"diffall-batch-submit-{uuid.uuid4()}"  # a retry replays, never a second batch
        created = with_retries(
            lambda: client.create_batch(
                items, metadata={METADATA_KEY: submission.to_metadata()}, idempotency_key=key
            )
        )
        for outcome in created.get("items", []):
            if outcome.get("error"):
                error = outcome["error"]
                submission.refused.append(
                    {
                        "name": names[outcome["index"]],
                        "code": error["code"],
                        "message": error.get("message", ""),
                    }
                )
        submission.refused_count = len(submission.refused)
        if not wait:
            _print_submitted(created, submission, found, as_json)
            return
        batch = client.wait_batch(created, timeout_s=timeout_s, progress=progress)
        _report(client, batch, gate, submission, as_json, found=found)


@batch_app.command("wait")
def wait_command(
    batch_id: Annotated[str, typer.Argument(metavar="ID", help="The batch's id.")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    timeout_s: Timeout = 3600.0,
    fail_under: FailUnder = None,
    fail_on: FailOn = None,
    allow_unmatched: AllowUnmatched = False,
    progress: ShowProgress = None,
    as_json: AsJson = False,
) -> None:
    """Wait for a batch to finish, print a summary and apply the gates."""
    gate = _gate(fail_under, fail_on, allow_unmatched)
    _check_timeout(timeout_s)
    try:
        uuid.UUID(batch_id)
    except ValueError:
        fail(USAGE_ERROR, f"ID must be a batch id (a UUID), got {batch_id!r}")
    with _client(url, api_key) as client:
        batch = client.wait_batch(batch_id, timeout_s=timeout_s, progress=progress)
        _report(client, batch, gate, Submission.from_batch(batch), as_json)


# -- output ----------------------------------------------------------------------------------


def _row(comparison: Mapping[str, Any], gate: Gate) -> dict[str, Any]:
    """One comparison as the summary shows it."""
    result = comparison.get("result") or {}
    return {
        "name": (comparison.get("metadata") or {}).get("name") or str(comparison.get("id")),
        "id": comparison.get("id"),
        "state": comparison.get("state"),
        "verdict": result.get("verdict"),
        "ssim": result.get("ssim"),
        "error": comparison.get("error"),
        "flags": gate.flags(comparison),
    }


def _report(
    client: DiffallClient,
    batch: Mapping[str, Any],
    gate: Gate,
    submission: Submission | None,
    as_json: bool,
    *,
    found: FolderPairs | None = None,
) -> None:
    """Print the finished batch (table or JSON) and exit 1 when the gate is not met."""
    comparisons = list(client.iter_batch_comparisons(str(batch["id"]), limit=100))
    rows = sorted(
        (_row(c, gate) for c in comparisons), key=lambda row: (not row["flags"], str(row["name"]))
    )
    unmatched = submission.unmatched if submission else 0
    refused = submission.refused_count if submission else 0
    outcome = evaluate(gate, comparisons, unmatched=unmatched, refused=refused)
    if as_json:
        print(json.dumps(_json_outcome(batch, gate, outcome, rows, submission, found), indent=2))
    else:
        _print_table(batch, gate, outcome, rows, submission)
    if not outcome.passed:
        fail(GATE_FAILED, "; ".join(outcome.reasons), exit_code=EXIT_GATE_FAILED)


def _json_outcome(
    batch: Mapping[str, Any],
    gate: Gate,
    outcome: GateOutcome,
    rows: list[dict[str, Any]],
    submission: Submission | None,
    found: FolderPairs | None,
) -> dict[str, Any]:
    """The ``--json`` document of a finished batch."""
    data: dict[str, Any] = {
        "batch": dict(batch),
        "gate": {
            "active": gate.active,
            "passed": outcome.passed,
            "reasons": outcome.reasons,
            "fail_under": gate.fail_under,
            "fail_on": sorted(gate.fail_on),
            "allow_unmatched": gate.allow_unmatched,
        },
        "comparisons": rows,
    }
    data.update(_folders_json(submission, found))
    return data


def _folders_json(submission: Submission | None, found: FolderPairs | None) -> dict[str, Any]:
    """The folder part of the JSON: full lists when this process paired them, else what the
    batch metadata kept."""
    if submission is None:
        return {}
    return {
        "dir_a": submission.dir_a,
        "dir_b": submission.dir_b,
        "only_in_a": found.only_in_a if found else submission.only_in_a,
        "only_in_b": found.only_in_b if found else submission.only_in_b,
        "unmatched": submission.unmatched,
        "ignored": found.ignored if found else submission.ignored,
        "refused": submission.refused,
    }


def _print_submitted(
    created: Mapping[str, Any], submission: Submission, found: FolderPairs, as_json: bool
) -> None:
    """``submit`` without ``--wait``: the batch and what was left out."""
    batch = {key: value for key, value in created.items() if key != "items"}
    if as_json:
        document = {"batch": batch, "pairs": len(found.pairs)}
        document.update(_folders_json(submission, found))
        print(json.dumps(document, indent=2))
        return
    console = Console(highlight=False, soft_wrap=True)
    console.print(
        f"batch {batch['id']}: {batch.get('total', 0)} comparisons submitted "
        f"({len(found.pairs)} pairs, {submission.refused_count} refused, "
        f"{submission.unmatched} in only one folder)",
        markup=False,
    )
    for item in submission.refused:
        console.print(f"  refused {item['name']}: {item['code']} {item['message']}", markup=False)
    console.print(f"wait for it: diffall batch wait {batch['id']}", markup=False)


def _percent(value: Any) -> str:
    return "" if value is None else f"{float(value) * 100:.2f} %"


def _print_table(
    batch: Mapping[str, Any],
    gate: Gate,
    outcome: GateOutcome,
    rows: list[dict[str, Any]],
    submission: Submission | None,
) -> None:
    """The human summary: counts, the comparisons (flagged first, at most MAX_LISTED), what
    was left out, and the gate."""
    console = Console(highlight=False, soft_wrap=True)
    counts = batch.get("counts") or {}
    final = ("succeeded", "failed", "canceled")
    states = ", ".join(f"{counts[state]} {state}" for state in final if state in counts)
    console.print(f"batch {batch['id']}: {batch.get('total', len(rows))} comparisons, {states}")
    verdicts = {k: v for k, v in (batch.get("verdicts") or {}).items() if v}
    if verdicts:
        console.print("verdicts: " + ", ".join(f"{k} {v}" for k, v in verdicts.items()))
    table = Table("name", "state", "verdict", "SSIM", "note", box=None, pad_edge=False)
    for row in rows[:MAX_LISTED]:
        note = ", ".join(row["flags"])
        if row["error"]:
            note = f"{row['error'].get('code')}: {row['error'].get('message')}"
        table.add_row(
            row["name"],
            str(row["state"]),
            row["verdict"] or "",
            _percent(row["ssim"]),
            note,
            style="red" if row["flags"] else None,
        )
    console.print(table)
    if len(rows) > MAX_LISTED:
        console.print(f"... and {len(rows) - MAX_LISTED} more")
    if submission is not None:
        for folder, names in (
            (submission.dir_a, submission.only_in_a),
            (submission.dir_b, submission.only_in_b),
        ):
            if names:
                console.print(f"only in {folder}: {', '.join(names)}", markup=False)
        for item in submission.refused:
            console.print(f"refused {item['name']}: {item['code']}", markup=False)
    if gate.active:
        verdict = "passed" if outcome.passed else "FAILED: " + "; ".join(outcome.reasons)
        console.print(f"gate: {verdict}", markup=False)
