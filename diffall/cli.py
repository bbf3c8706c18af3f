"""The ``diffall`` command line.

Exit codes: 0 success; 1 a gate not met; 2 bad input or usage; 3 no answer from the service. A
failure prints one line on stderr starting with its stable code (``diffall/cli_errors.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from diffall.batch_cli import Antialiasing, batch_app
from diffall.cli_errors import (
    EXIT_GATE_FAILED,
    FILE_NOT_FOUND,
    GATE_FAILED,
    INVALID_OPTIONS,
    USAGE_ERROR,
    CodedErrorsGroup,
    fail,
    show_help,
)
from diffall.gates import parse_threshold

app = typer.Typer(
    name="diffall",
    cls=CodedErrorsGroup,
    help="Find every difference between two images: where, how much and why.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _main(ctx: typer.Context) -> None:
    """DiffALL command line."""
    if ctx.invoked_subcommand is None:  # `diffall` alone: the help, and a usage error
        show_help(ctx)
        fail(USAGE_ERROR, "a command is required (see 'diffall --help')")


def parse_rect(text: str) -> tuple[int, int, int, int]:
    """Parse ``X,Y,W,H`` (pixels in A's coordinates) into a tuple; raise ValueError if malformed."""
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError(f"--ignore takes X,Y,W,H, got {text!r}")
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--ignore takes four integers X,Y,W,H, got {text!r}") from None
    return x, y, w, h


def read_input(path: Path) -> bytes:
    """The bytes of an input file; ``file_not_found`` (missing, or a folder) or
    ``file_unreadable`` (permissions, I/O error) as a :class:`~diffall.cli_errors.CliError`."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        fail(FILE_NOT_FOUND, f"{path}: no such file")
    except IsADirectoryError:
        fail(FILE_NOT_FOUND, f"{path}: is a directory, not a file")
    except OSError as exc:
        fail("file_unreadable", f"{path}: {exc.strerror or exc}")


@app.command("compare")
def compare_command(
    image_a: Annotated[Path, typer.Argument(help="Reference image A.", show_default=False)],
    image_b: Annotated[Path, typer.Argument(help="Candidate image B.", show_default=False)],
    mode: Annotated[
        str, typer.Option(help="auto (align only when needed), pixel (never) or align (always).")
    ] = "auto",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result contract as JSON.")
    ] = False,
    heatmap: Annotated[
        Path | None, typer.Option(help="Write the heatmap PNG (A's pixel grid) here.")
    ] = None,
    legend: Annotated[
        Path | None,
        typer.Option(help="Write the heatmap's legend (SVG, the tolerance marked) here."),
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(help="Rectangle X,Y,W,H in A's pixels to leave out; repeatable."),
    ] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(help="Noise tolerance as a fraction of the data range (default 0.1)."),
    ] = None,
    antialiasing: Antialiasing = True,
    fail_under: Annotated[
        str | None,
        typer.Option(help="Exit 1 when SSIM is below this (0.98 or 98%): a QA gate."),
    ] = None,
) -> None:
    """Compare B against A and report scores, verdict, summary and changed regions."""
    from core.imaging import CompareOptions, ImagingError, compare
    from core.imaging.options import DEFAULT_TOLERANCE

    try:
        rects = tuple(parse_rect(r) for r in ignore or [])
        gate = parse_threshold(fail_under) if fail_under is not None else None
    except ValueError as exc:
        fail(INVALID_OPTIONS, str(exc))
    data_a, data_b = read_input(image_a), read_input(image_b)
    try:
        options = CompareOptions(
            mode=mode,  # type: ignore[arg-type]  # validated by CompareOptions
            ignore=rects,
            tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance,
            antialiasing=antialiasing,
            preview_max_side=None,  # the command line writes no preview: do not render one
        )
        result = compare(data_a, data_b, options)
    except ImagingError as exc:
        name = {"a": str(image_a), "b": str(image_b)}.get(exc.image or "")
        fail(exc.code.value, f"{name + ': ' if name else ''}{exc.message}")
    if heatmap is not None:
        try:
            heatmap.write_bytes(result.heatmap_png)
        except OSError as exc:
            fail("output_unwritable", f"cannot write {heatmap}: {exc.strerror or exc}")
    if legend is not None:
        from core.imaging.legend import render_legend_svg

        svg = render_legend_svg(result.tolerance, antialiasing=antialiasing)
        try:
            legend.write_text(svg, encoding="utf-8")
        except OSError as exc:
            fail("output_unwritable", f"cannot write {legend}: {exc.strerror or exc}")
    payload = result.to_dict()
    if as_json:
        print(json.dumps(payload, indent=2))
    else:
        _print_human(payload, heatmap)
    if gate is not None and payload["ssim"] < gate:
        fail(
            GATE_FAILED,
            f"SSIM {payload['ssim'] * 100:.2f} % is under --fail-under {gate * 100:.2f} %",
            exit_code=EXIT_GATE_FAILED,
        )


def _print_human(payload: dict[str, object], heatmap: Path | None) -> None:
    console = Console(highlight=False)
    ssim = float(payload["ssim"])  # type: ignore[arg-type]
    psnr = payload["psnr"]
    console.print(f"[bold]{payload['verdict']}[/bold]  {payload['summary']}")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("SSIM", f"{ssim * 100:.2f} %")
    table.add_row("PSNR", "identical" if psnr is None else f"{float(psnr):.2f} dB")  # type: ignore[arg-type]
    table.add_row("histogram", f"{float(payload['histogram_similarity']) * 100:.2f} %")  # type: ignore[arg-type]
    table.add_row("changed", f"{float(payload['changed_ratio']) * 100:.3f} % of pixels")  # type: ignore[arg-type]
    alignment = payload["alignment"]
    assert isinstance(alignment, dict)
    table.add_row(
        "alignment", "applied" if alignment["applied"] else f"not applied ({alignment['reason']})"
    )
    console.print(table)
    regions = payload["regions"]
    assert isinstance(regions, list)
    for region in regions[:5]:
        console.print(
            f"  region x={region['x']} y={region['y']} {region['width']}x{region['height']} px,"
            f" mean diff {region['mean_diff'] * 100:.1f} %, max {region['max_diff'] * 100:.1f} %"
        )
    if len(regions) > 5:
        console.print(f"  ... and {len(regions) - 5} more regions")
    if heatmap is not None:
        console.print(f"heatmap written to {heatmap}")


# Service commands (serve, keys, db): diffall/service_cli.py.
from diffall.service_cli import register as _register_service_commands  # noqa: E402

_register_service_commands(app)
app.add_typer(batch_app, name="batch")


if __name__ == "__main__":  # pragma: no cover
    app()
