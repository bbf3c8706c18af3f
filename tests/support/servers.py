"""Servers of a test's (or benchmark's) own, to stop and restart at will: a ``redis-server``
without persistence and a PostgreSQL cluster, each on a free loopback port.

The machine's shared PostgreSQL (5432) and Redis (6379) serve every test at once and must never
be stopped; fault injection (``bench/chaos.py``, the Redis restart tests) uses these instead.
A missing binary is an error (never a skip). Nothing here imports pytest.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.processes import free_port

__all__ = ["PrivatePostgres", "PrivateRedis", "ServerError"]

#: Seconds a server may take to answer after a start.
START_TIMEOUT_S = 30.0


class ServerError(RuntimeError):
    """A private server could not be set up, started or stopped."""


class PrivateRedis:
    """A ``redis-server`` of its own on a free loopback port, without persistence: a restart
    starts it empty (as a Redis whose data was lost)."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerError("redis-server is not installed (Debian package redis-server)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A client on database 0."""
        return redis.Redis(host="127.0.0.1", port=self.port)

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise ServerError("the private redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (its data is gone)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop the server (its data is gone: no persistence) and start it on the same port."""
        self.stop()
        self.start()


def _postgres_bin_dir() -> Path:
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise ServerError("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    return Path(found[-1]).parent


class PrivatePostgres:
    """A PostgreSQL cluster of its own (``initdb`` in a temporary folder, trust authentication,
    user ``postgres``, no fsync) on a free loopback port; stopped and started by ``pg_ctl``.

    Run as root, the cluster belongs to the ``postgres`` system user (PostgreSQL refuses to run
    as root). Call :meth:`close` to stop it and remove its files.
    """

    def __init__(self) -> None:
        self.bin_dir = _postgres_bin_dir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="diffall-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerError("running as root needs the `postgres` system user") from None
            os.chown(self.root, self._owner.pw_uid, self._owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` on this cluster (psycopg 3)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout_s: float = 60.0) -> None:
        argv = [str(self.bin_dir / tool), *args]
        if self._owner is not None:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=self.root
        )
        if done.returncode != 0:
            raise ServerError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        """Start the cluster and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w", "start"
        )

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the cluster (``mode``: ``smart``, ``fast`` or ``immediate``, as ``pg_ctl``)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        """Create ``name``; return its URL."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return self.url(name)

    def close(self) -> None:
        """Stop the cluster (at once) and remove its files."""
        with contextlib.suppress(ServerError, subprocess.TimeoutExpired):
            self.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)
