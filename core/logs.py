"""One log set-up for every process (API, workers, beat, ``diffall serve``): structlog over the
standard library, configured by :func:`configure_logging`.

- **One format.** structlog's own lines and the standard library's (uvicorn, Celery, kombu) go
  through one :class:`structlog.stdlib.ProcessorFormatter`: one JSON object per line when
  stderr is not a terminal, readable coloured lines on a terminal.
- **No secrets.** Exceptions are rendered as plain tracebacks (file, line, code: never local
  variables); event keys that name headers, bodies or credentials are dropped; anything shaped
  like an API key or a ``Bearer`` token is masked in every rendered string (:func:`redact`).
  uvicorn's access line loses its query string (the API logs each request itself, without it).
- **Never blocking.** With ``background=True`` (the API: an event loop) records are handed to a
  queue and formatted and written by one thread (:class:`logging.handlers.QueueListener`).
- **Quiet when idle.** Celery's routine lines (task received, task succeeded, beat sending a due
  task) are logged at DEBUG: shown with ``level="DEBUG"``, hidden at INFO. Warnings and errors
  of those loggers are unchanged.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import re
import sys
import threading
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "ROUTINE_LOGGERS",
    "configure_logging",
    "redact",
]

#: Standard-library loggers whose INFO lines are routine chatter, logged at DEBUG instead.
ROUTINE_LOGGERS: Final = frozenset(
    {
        "celery.worker.strategy",  # "Task ... received"
        "celery.app.trace",  # "Task ... succeeded in ..."
        "celery.beat",  # "Scheduler: Sending due task ..."
        "alembic.runtime.plugins",  # "setup plugin ..." (diffall serve migrates at start)
    }
)
#: Event keys never rendered (their values may be headers, bodies or credentials).
DROPPED_KEYS: Final = frozenset(
    {
        "headers",
        "request_headers",
        "response_headers",
        "authorization",
        "cookie",
        "cookies",
        "body",
        "request_body",
        "response_body",
        "content",
        "api_key",
        "password",
        "secret",
        "token",
        "locals",
    }
)
_SECRET_PATTERNS: Final = (
    re.compile(r"dfa_[A-Za-z0-9_-]{8,}"),  # DiffALL API keys
    re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"),  # Authorization values
    re.compile(r"whsec_[A-Za-z0-9+/=]{8,}"),  # webhook signing secrets
)
_MASK: Final = "[redacted]"

_lock = threading.Lock()
_listener: logging.handlers.QueueListener | None = None
_configured: tuple[Any, ...] | None = None


def redact(text: str) -> str:
    """``text`` with API keys, ``Bearer``/``Basic`` credentials and webhook secrets masked.

    Parameters
    ----------
    text
        Any string about to be logged.

    Returns
    -------
    str
        The same string with every match replaced by ``[redacted]``.
    """
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_MASK, text)
    return text


def _drop_sensitive_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in [k for k in event_dict if k.lower() in DROPPED_KEYS]:
        del event_dict[key]
    return event_dict


def _redact_values(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact(value)
    return event_dict


class _StripAccessQuery(logging.Filter):
    """uvicorn's access line ``(client, method, path?query, http_version, status)``: drop the
    query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


class _RoutineToDebug(logging.Filter):
    """Lower routine INFO records of :data:`ROUTINE_LOGGERS` to DEBUG; drop them below the
    handler's level."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name in ROUTINE_LOGGERS:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.level <= logging.DEBUG
        return True


class _StderrHandler(logging.StreamHandler[TextIO]):
    """A stream handler writing to whatever ``sys.stderr`` is at the time of each record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


class _PassThroughQueueHandler(logging.handlers.QueueHandler):
    """Enqueue records unformatted: formatting (and exception rendering) happens on the
    listener's thread, never on the caller's (the event loop)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def _shared_processors() -> list[Processor]:
    return [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_sensitive_keys,
    ]


def _stop_listener() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def configure_logging(
    *, level: int | str = logging.INFO, json: bool | None = None, background: bool = False
) -> None:
    """Configure structlog and the standard library's root logger for this process.

    Safe to call again: the same arguments change nothing; other arguments replace the set-up.

    Parameters
    ----------
    level
        Lowest level shown (``"DEBUG"`` also shows Celery's routine lines).
    json
        One JSON object per line (True) or readable lines (False); None: JSON unless stderr is
        a terminal.
    background
        Format and write on a background thread (for processes running an event loop).
    """
    global _listener, _configured
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else int(level)
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    as_json = (not sys.stderr.isatty()) if json is None else json
    wanted = (numeric, as_json, background)
    with _lock:
        if _configured == wanted and (not background or _listener is not None):
            return
        renderer: Processor = (
            structlog.processors.JSONRenderer()
            if as_json
            else structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
            )
        )
        formatter = structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_shared_processors(),
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # Plain tracebacks (standard-library records): never local variables.
                structlog.processors.format_exc_info,
                _redact_values,
                renderer,
            ],
        )
        output = _StderrHandler()
        output.setFormatter(formatter)
        output.addFilter(_RoutineToDebug(numeric))
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        _stop_listener()
        if background:
            records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
            front = _PassThroughQueueHandler(records)
            front.addFilter(_RoutineToDebug(numeric))
            _listener = logging.handlers.QueueListener(records, output)
            _listener.start()
            root.addHandler(front)
        else:
            root.addHandler(output)
        root.setLevel(numeric)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "kombu"):
            logger = logging.getLogger(name)
            if name == "uvicorn.access" and not logger.propagate and not logger.handlers:
                continue  # uvicorn --no-access-log: keep it off
            logger.handlers.clear()
            logger.propagate = True
            logger.disabled = False
        access = logging.getLogger("uvicorn.access")
        if not any(isinstance(f, _StripAccessQuery) for f in access.filters):
            access.addFilter(_StripAccessQuery())
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.filter_by_level,
                *_shared_processors(),
                structlog.processors.StackInfoRenderer(),
                # Plain tracebacks: frames and code lines, never local variables.
                structlog.processors.format_exc_info,
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            # Not cached: structlog.testing.capture_logs must keep working after a configure.
            cache_logger_on_first_use=False,
        )
        _configured = wanted


atexit.register(_stop_listener)
