"""How the ``diffall`` command line fails: one line on stderr that starts with a stable code.

Every command raises :class:`CliError` (or lets a :class:`diffall.client.DiffallError` or a Click
usage error through); :class:`CodedErrorsGroup`, the root command's class, turns each into
``<code>: <message>`` on stderr and the exit code:

- ``0`` success;
- ``1`` a gate was not met (``gate_failed``: ``--fail-under``, ``--fail-on``);
- ``2`` bad input or usage (``usage_error``, ``file_not_found``, ``invalid_options``, the engine's
  codes such as ``corrupt_image``, the API's codes such as ``unauthorized``;
  ``server_not_installed`` for ``serve``, ``keys``, ``db`` or ``compare`` where only the client
  distribution is installed);
- ``3`` no answer: the server is unreachable or unavailable, or ``--timeout`` passed
  (``transport_error``, ``timeout``, ``wait_timeout``, ``service_unavailable``...), so a pipeline
  can retry those and fail the others.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Final, NoReturn

import typer
from typer.core import TyperGroup

from diffall.client import DiffallError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_GATE_FAILED",
    "EXIT_NO_ANSWER",
    "CliError",
    "CodedErrorsGroup",
    "fail",
    "from_client_error",
    "show_help",
]

EXIT_GATE_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_NO_ANSWER: Final = 3

#: A command line that does not parse: unknown option, missing argument, bad value type.
USAGE_ERROR: Final = "usage_error"
#: An input file or folder that does not exist (or is not a file / not a folder).
FILE_NOT_FOUND: Final = "file_not_found"
#: An option value out of range or malformed (``--fail-under 99``, ``--ignore 1,2,3``).
INVALID_OPTIONS: Final = "invalid_options"
#: A gate was not met (exit 1).
GATE_FAILED: Final = "gate_failed"


def _click_base(name: str) -> type[Exception]:
    """Click's ``UsageError`` / ``ClickException`` as typer raises them (typer vendors Click
    from 0.29 on, as ``typer._click``; before, it used the ``click`` package): found through the
    public ``typer.BadParameter``, so no private module is imported."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == name and issubclass(cls, Exception):
            return cls
    raise ImportError(f"typer.BadParameter does not derive from {name}")  # pragma: no cover


_UsageError: Final = _click_base("UsageError")
_ClickException: Final = _click_base("ClickException")

#: A command that runs the service or the engine on this machine (``serve``, ``keys``, ``db``,
#: ``compare``) in an install of the client distribution alone.
SERVER_NOT_INSTALLED: Final = "server_not_installed"
#: Top-level packages of the server distribution (diffall-server).
_SERVER_PACKAGES: Final = frozenset({"core", "api", "worker"})

#: Client-side codes of :class:`~diffall.client.DiffallError` meaning "no answer" (exit 3).
_NO_ANSWER_CODES: Final = frozenset({"timeout", "transport_error", "wait_timeout"})


class CliError(Exception):
    """A failure the command line reports as ``<code>: <message>`` and exits with.

    Parameters
    ----------
    code
        Stable machine-readable code (snake_case), the first token of the line.
    message
        One line for a person.
    exit_code
        ``1`` gate not met, ``2`` bad input (default), ``3`` no answer.
    """

    def __init__(self, code: str, message: str, *, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = " ".join(message.split())  # one line, whatever the message held
        self.exit_code = exit_code


def fail(code: str, message: str, *, exit_code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Raise :class:`CliError` (for commands: ``fail("file_not_found", "a.png: no such file")``)."""
    raise CliError(code, message, exit_code=exit_code)


def from_client_error(exc: DiffallError) -> CliError:
    """The command-line failure for an SDK error: its code; exit 3 when there was no answer
    (transport failure, time-out, 5xx, rate limited), 2 otherwise (the request was refused)."""
    no_answer = exc.code in _NO_ANSWER_CODES or exc.status >= 500 or exc.status == 429
    detail = exc.detail if exc.status == 0 else f"{exc.detail} (HTTP {exc.status})"
    return CliError(exc.code, detail, exit_code=EXIT_NO_ANSWER if no_answer else EXIT_BAD_INPUT)


def show_help(ctx: typer.Context) -> None:
    """Print the help of ``ctx``'s command on stdout (typer's rich help prints itself and
    returns an empty string; plain Click returns the text)."""
    text = ctx.get_help()
    if text:
        typer.echo(text)


def _usage_line(exc: Exception) -> str:
    """One line for a Click usage error, naming the help to read; a group called without its
    command (Click's ``NoArgsIsHelpError``, matched by name as typer itself does) shows its help
    on stdout first."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        show_help(ctx)
        message = "a command is required"
    else:
        message = exc.format_message()  # type: ignore[attr-defined]
    where = ctx.command_path if ctx is not None else "diffall"
    return f"{USAGE_ERROR}: {' '.join(message.split())} (see '{where} --help')"


class CodedErrorsGroup(TyperGroup):
    """The root command's class: every failure becomes one coded line on stderr and an exit code
    (the module docstring lists them); Click's own error rendering is never used."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; in standalone mode exit with the code (module docstring)."""
        try:
            result = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except CliError as exc:
            code = _report(f"{exc.code}: {exc.message}", exc.exit_code)
        except DiffallError as exc:
            error = from_client_error(exc)
            code = _report(f"{error.code}: {error.message}", error.exit_code)
        except _UsageError as exc:
            code = _report(_usage_line(exc), EXIT_BAD_INPUT)
        except _ClickException as exc:  # e.g. a FileError: an unreadable file
            message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
            code = _report(f"{USAGE_ERROR}: {message}", EXIT_BAD_INPUT)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in _SERVER_PACKAGES:
                raise
            command = _command_path(args)
            code = _report(
                f"{SERVER_NOT_INSTALLED}: '{command}' runs the service or the engine on this "
                "machine: install the server distribution (diffall-server), not the client alone",
                EXIT_BAD_INPUT,
            )
        except typer.Abort:
            code = _report("aborted: interrupted", 130)
        else:
            code = result if isinstance(result, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


def _command_path(args: Sequence[str] | None) -> str:
    """``diffall <command>`` for a message, from the arguments (default ``sys.argv``)."""
    words = list(sys.argv[1:] if args is None else args)
    command = next((word for word in words if not word.startswith("-")), None)
    return "diffall" if command is None else f"diffall {command}"


def _report(line: str, exit_code: int) -> int:
    """Print ``line`` on stderr; return ``exit_code``."""
    print(line, file=sys.stderr, flush=True)
    return exit_code
