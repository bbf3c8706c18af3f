"""The production topology on servers of its own, for fault injection (``bench/chaos.py``).

:class:`ChaosStack` starts a private PostgreSQL cluster and a private ``redis-server``
(``tests/support/servers.py``: the machine's shared ones are never stopped), moto's S3 server,
the API (uvicorn), one Celery worker (prefork), a beat and a delivery-only worker (threads) as
in ``docker-compose.yml``, each in its own process group, and makes an API key. Every piece can
be killed, stopped, frozen and started again; :meth:`ChaosStack.close` removes everything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.lib.stack import (
    Stack,
    celery_worker_argv,
    create_bucket,
    make_api_key,
    moto_argv,
    s3_env,
    wait_for_api,
    wait_for_celery,
)
from core.config import ALLOWED_NETWORKS_ENV
from tests.support.processes import (
    Service,
    api_argv,
    descendants,
    free_port,
    port_open,
    service_env,
    start,
    wait_until,
)
from tests.support.servers import PrivatePostgres, PrivateRedis

__all__ = ["RETRY_SCHEDULE_S", "ChaosStack"]

#: Webhook retry schedule of the stack (the default's 5 min second retry would outlast a run;
#: what is measured is that a failed delivery is retried with its webhook-id, never doubled).
RETRY_SCHEDULE_S = "0,2,4,8,15,30,60,120"


class ChaosStack(Stack):
    """PostgreSQL, Redis, S3, API, worker, beat and delivery worker of their own.

    Parameters
    ----------
    workers : int
        Prefork processes of the worker (>= 1).
    timeout_s : float
        Seconds a process may take to start.
    """

    def __init__(self, *, workers: int = 2, timeout_s: float = 90.0) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.root = Path(tempfile.mkdtemp(prefix="diffall-chaos-"))
        self.procs: dict[str, Service] = {}
        self.postgres: PrivatePostgres | None = None
        self.redis: PrivateRedis | None = None
        self.database_url = ""
        self.base_url = ""
        self.key = ""
        self.env: dict[str, str] = {}
        self._starts: dict[str, int] = {}
        self._frozen: set[str] = set()

    # -- start -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start every server and process; make an API key; wait until the API answers."""
        from core.db.session import upgrade_database

        self.postgres = PrivatePostgres()
        self.database_url = self.postgres.create_database("diffall")
        upgrade_database(self.database_url)
        (self.root / "redis").mkdir()
        self.redis = PrivateRedis(self.root / "redis")
        s3_port, api_port = free_port(), free_port()
        s3_url = f"http://127.0.0.1:{s3_port}"
        self.base_url = f"http://127.0.0.1:{api_port}"
        bucket = f"chaos-{uuid.uuid4().hex[:12]}"
        self.env = service_env(
            {
                "DIFFALL_ENV": "test",
                "DIFFALL_DATA_DIR": str(self.root / "data"),
                "DIFFALL_DATABASE_URL": self.database_url,
                "DIFFALL_BROKER_URL": self.redis.url,
                **s3_env(s3_url, bucket),
                "DIFFALL_API__PUBLIC_BASE_URL": self.base_url,
                "DIFFALL_LIMITS__RATE_LIMIT_PER_MINUTE": "1000000",
                "DIFFALL_WEBHOOKS__RETRY_SCHEDULE_S": RETRY_SCHEDULE_S,
                ALLOWED_NETWORKS_ENV: "127.0.0.1/32",
            }
        )
        (self.root / "data").mkdir()
        s3 = self.launch("s3", moto_argv(s3_port))
        wait_until(port_open(s3_port), what="moto S3", timeout_s=self.timeout_s, services=[s3])
        create_bucket(s3_url, bucket)
        self.start_worker()
        self.launch("beat", self._beat_argv())
        self._start_celery(
            "deliveries",
            celery_worker_argv(
                concurrency=4,
                hostname=f"chaos-deliveries-{uuid.uuid4().hex[:8]}",
                pool="threads",
                queues="maintenance",
            ),
        )
        self.launch("api", api_argv(api_port, log_level="warning"))
        self.key = make_api_key(self.env, self.root, tenant="chaos", timeout_s=self.timeout_s)
        wait_for_api(self.base_url, list(self.procs.values()), timeout_s=self.timeout_s)

    def _beat_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "--app=worker.celery_app",
            "beat",
            f"--schedule={self.root / 'data' / 'celerybeat-schedule'}",
            "--loglevel=INFO",
        ]

    def launch(self, name: str, argv: list[str]) -> Service:
        """Start ``argv`` as ``name`` (each start of a name gets a log of its own)."""
        count = self._starts.get(name, 0) + 1
        self._starts[name] = count
        label = name if count == 1 else f"{name}-{count}"
        proc = start(label, argv, env=self.env, cwd=self.root, log_dir=self.root / "logs")
        self.procs[name] = proc
        return proc

    def _start_celery(self, name: str, argv: list[str]) -> None:
        wait_for_celery(self.launch(name, argv), timeout_s=self.timeout_s)

    def start_worker(self) -> None:
        """Start the job worker and wait until it is ready."""
        self._start_celery(
            "worker",
            celery_worker_argv(concurrency=self.workers, hostname=f"chaos-{uuid.uuid4().hex[:8]}"),
        )

    # -- faults ----------------------------------------------------------------------------

    def worker_children(self) -> list[int]:
        """Process ids of the job worker's pool processes."""
        return sorted(descendants(self.procs["worker"].pid))

    def kill_worker_child(self, pid: int) -> None:
        """SIGKILL one pool process (the worker's parent replaces it)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def kill_worker(self) -> None:
        """SIGKILL the job worker's parent and pool processes at once."""
        self.procs["worker"].kill()

    def freeze(self, name: str) -> None:
        """SIGSTOP the process group of ``name`` (it keeps its sockets, answers nothing)."""
        os.killpg(self.procs[name].pid, signal.SIGSTOP)
        self._frozen.add(name)

    def thaw(self, name: str) -> None:
        """SIGCONT the process group of ``name``."""
        os.killpg(self.procs[name].pid, signal.SIGCONT)
        self._frozen.discard(name)

    # -- reading ---------------------------------------------------------------------------

    def client(self, *, timeout: float = 30.0) -> httpx.Client:
        """An httpx client on the API with the key."""
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=timeout
        )

    def describe_failure(self) -> str:
        """The log tails of every process (for an error message)."""
        return "\n".join(proc.describe() for proc in self.procs.values())

    def logs(self) -> dict[str, str]:
        """Every log file of the run, by file name."""
        folder = self.root / "logs"
        return {p.name: p.read_text(errors="replace") for p in sorted(folder.glob("*.log"))}

    def rows(self, statement: Any, params: dict[str, Any] | None = None) -> list[Any]:
        """Run ``statement`` (SQLAlchemy) on the stack's database over a connection of its
        own (the server is stopped and started under the stack) and return its rows."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.database_url, poolclass=sa.NullPool)
        try:
            with engine.connect() as connection:
                return list(connection.execute(statement, params or {}).all())
        finally:
            engine.dispose()

    # -- stop ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process and server and remove the files."""
        for name in list(self._frozen):
            with contextlib.suppress(ProcessLookupError, KeyError):
                self.thaw(name)
        for name in ("api", "deliveries", "beat", "worker", "s3"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                proc.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.close()
        shutil.rmtree(self.root, ignore_errors=True)
