"""The real service topology on this machine, for the benchmarks.

:class:`ServiceStack` creates a PostgreSQL database (migrated for real with
:func:`core.db.session.upgrade_database`) and claims an empty Redis database, then starts moto's S3
server, ONE Celery worker and the API (uvicorn) as subprocesses, each in its own process group
(``tests/support/processes.py``'s launcher, shared with the tests), and makes an API key with
``diffall keys create``. Everything is stopped, dropped and flushed on exit, whatever happened.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Self

import httpx

from tests.support.processes import (
    Service,
    api_argv,
    free_port,
    http_ok,
    port_open,
    service_env,
    start,
    wait_until,
)

__all__ = [
    "BENCH_QUEUES",
    "PG_ADMIN_URL",
    "REDIS_HOST",
    "REDIS_MARKER",
    "REDIS_PORT",
    "ServiceStack",
    "Stack",
    "celery_worker_argv",
    "create_bucket",
    "make_api_key",
    "moto_argv",
    "s3_env",
    "wait_for_api",
    "wait_for_celery",
]

#: Admin URL of the PostgreSQL server (a database is created and dropped through it).
PG_ADMIN_URL = os.environ.get(
    "DIFFALL_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
#: Credentials and region used against moto's S3 server (it accepts any).
S3_KEY, S3_SECRET, S3_REGION = "bench", "bench-secret", "us-east-1"
#: Marker key written into the chosen Redis database so no other run picks it.
REDIS_MARKER = "diffall-bench:claimed"
#: Queues of the benchmarks' comparison worker (the big queue has no worker of its own here:
#: their pairs are small).
BENCH_QUEUES = "interactive,batch,maintenance"


def celery_worker_argv(
    *, concurrency: int, hostname: str, pool: str = "prefork", queues: str = BENCH_QUEUES
) -> list[str]:
    """A ``celery worker`` of the service's app: ``pool`` with ``concurrency`` processes (or
    threads) on ``queues``, named ``hostname@%h``, without gossip, mingle and heartbeat."""
    return [
        sys.executable,
        "-m",
        "celery",
        "--app=worker.celery_app",
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        f"--queues={queues}",
        f"--hostname={hostname}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=INFO",
    ]


def moto_argv(port: int) -> list[str]:
    """moto's S3 server on ``127.0.0.1:port``."""
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def s3_env(s3_url: str, bucket: str) -> dict[str, str]:
    """The storage settings of a stack on moto's S3 server at ``s3_url``, bucket ``bucket``."""
    return {
        "DIFFALL_STORAGE__BACKEND": "s3",
        "DIFFALL_STORAGE__S3_ENDPOINT_URL": s3_url,
        "DIFFALL_STORAGE__S3_BUCKET": bucket,
        "DIFFALL_STORAGE__S3_REGION": S3_REGION,
        "DIFFALL_STORAGE__S3_ACCESS_KEY_ID": S3_KEY,
        "DIFFALL_STORAGE__S3_SECRET_ACCESS_KEY": S3_SECRET,
    }


def create_bucket(s3_url: str, bucket: str) -> None:
    """Create ``bucket`` on the S3 server at ``s3_url`` (moto accepts any credentials)."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name=S3_REGION,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
    )
    try:
        client.create_bucket(Bucket=bucket)
    finally:
        client.close()


def make_api_key(env: dict[str, str], cwd: Path, *, tenant: str, timeout_s: float) -> str:
    """``diffall keys create --tenant TENANT`` with the stack's environment; the key."""
    keys = subprocess.run(
        [sys.executable, "-m", "diffall.cli", "keys", "create", "--tenant", tenant],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if keys.returncode != 0 or not keys.stdout.strip():
        raise RuntimeError(f"`diffall keys create` failed:\n{keys.stdout}\n{keys.stderr}")
    return keys.stdout.strip().splitlines()[-1]


def wait_for_api(base_url: str, procs: list[Service], *, timeout_s: float) -> None:
    """Wait until ``GET base_url/healthz`` answers 200 (showing ``procs``' logs otherwise)."""
    wait_until(http_ok(f"{base_url}/healthz"), what="the API", timeout_s=timeout_s, services=procs)


def wait_for_celery(proc: Service, *, timeout_s: float) -> None:
    """Wait until the Celery worker ``proc`` logged that it is ready (``TimeoutError`` with its
    log otherwise)."""
    wait_until(
        lambda: " ready." in proc.tail(100_000),
        what=f"the Celery worker {proc.name!r}",
        timeout_s=timeout_s,
        services=[proc],
    )


class Stack:
    """A context manager over :meth:`start` and :meth:`close`: whatever ``start`` got to is
    closed, on an error in it as on exit."""

    def start(self) -> None:
        """Start everything."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop and remove everything started."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServiceStack(Stack):
    """PostgreSQL database, Redis database, moto S3, API and one Celery worker, on this machine.

    Use as a context manager: everything started is stopped, the database dropped and the
    Redis database flushed on exit, whatever happened.

    Parameters
    ----------
    workers : int
        Celery worker concurrency (prefork pool processes, >= 1).
    timeout_s : float
        Seconds a process may take to start.
    """

    def __init__(self, *, workers: int, timeout_s: float = 60.0) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.root = Path(tempfile.mkdtemp(prefix="diffall-bench-"))
        self.database_name = f"diffall_bench_{uuid.uuid4().hex[:12]}"
        self.database_url = ""
        self.redis_db: int | None = None
        self.base_url = ""
        self.key = ""
        self.procs: dict[str, Service] = {}
        self._redis: Any = None
        self._db_created = False
        self._stopped_logs: list[str] = []
        self.env: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Create the database and Redis database, start S3, the worker and the API, make a key."""
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url

        from core.db.session import upgrade_database

        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{self.database_name}"')
            self._db_created = True
        finally:
            admin.dispose()
        self.database_url = (
            make_url(PG_ADMIN_URL)
            .set(database=self.database_name)
            .render_as_string(hide_password=False)
        )
        upgrade_database(self.database_url)
        self._claim_redis_db()

        s3_port, api_port = free_port(), free_port()
        s3_url = f"http://127.0.0.1:{s3_port}"
        self.base_url = f"http://127.0.0.1:{api_port}"
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        env = service_env(
            {
                "DIFFALL_ENV": "test",
                "DIFFALL_DATA_DIR": str(self.root / "data"),
                "DIFFALL_DATABASE_URL": self.database_url,
                "DIFFALL_BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.redis_db}",
                **s3_env(s3_url, bucket),
                "DIFFALL_API__PUBLIC_BASE_URL": self.base_url,
                # The benchmark measures throughput, not the per-key rate limiter.
                "DIFFALL_LIMITS__RATE_LIMIT_PER_MINUTE": "1000000",
            }
        )
        self.env = env
        s3 = self.start_process("s3", moto_argv(s3_port))
        self.procs["s3"] = s3
        wait_until(port_open(s3_port), what="moto S3", timeout_s=self.timeout_s, services=[s3])
        create_bucket(s3_url, bucket)
        self.start_worker()
        self.procs["api"] = self.start_process("api", api_argv(api_port, log_level="warning"))
        self.key = make_api_key(env, self.root, tenant="bench", timeout_s=self.timeout_s)
        wait_for_api(self.base_url, list(self.procs.values()), timeout_s=self.timeout_s)

    def start_worker(self) -> None:
        """Start the Celery worker (``--concurrency workers``) and wait until it is ready."""
        hostname = f"bench-{uuid.uuid4().hex[:8]}"
        worker = self.start_process(
            "worker", celery_worker_argv(concurrency=self.workers, hostname=hostname)
        )
        self.procs["worker"] = worker
        wait_for_celery(worker, timeout_s=self.timeout_s)

    def stop_worker(self) -> None:
        """Stop the worker (warm shutdown, then SIGKILL); queued jobs stay queued."""
        worker = self.procs.pop("worker", None)
        if worker is not None:
            worker.stop()
            self._stopped_logs.append(worker.tail())

    def _claim_redis_db(self) -> None:
        import redis

        numbers = list(range(1, 16))
        random.Random().shuffle(numbers)
        for number in numbers:
            client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
            if client.dbsize() == 0 and client.set(REDIS_MARKER, "1", nx=True):
                if client.dbsize() == 1:
                    self._redis, self.redis_db = client, number
                    return
                client.delete(REDIS_MARKER)
            client.close()
        raise RuntimeError("no empty Redis database among 1..15")

    def close(self) -> None:
        """Stop every process, drop the database, flush the Redis database, remove temp files."""
        errors: list[str] = []
        for name in ("api", "worker", "s3"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                try:
                    proc.stop()
                except Exception as exc:  # keep cleaning up
                    errors.append(f"stop {name}: {exc}")
        if self._db_created:
            try:
                import sqlalchemy as sa

                admin = sa.create_engine(
                    PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
                )
                try:
                    with admin.connect() as connection:
                        connection.exec_driver_sql(
                            f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)'
                        )
                    self._db_created = False
                finally:
                    admin.dispose()
            except Exception as exc:
                errors.append(f"drop database: {exc}")
        if self._redis is not None:
            try:
                self._redis.flushdb()
                self._redis.close()
                self._redis = None
            except Exception as exc:
                errors.append(f"flush redis: {exc}")
        shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise RuntimeError("clean-up failed: " + "; ".join(errors))

    # -- helpers ---------------------------------------------------------------------------

    def start_process(self, name: str, argv: list[str]) -> Service:
        """Start ``argv`` with the stack's environment in its folder (log in ``logs/``)."""
        return start(name, argv, env=self.env, cwd=self.root, log_dir=self.root / "logs")

    def groups(self) -> dict[str, int]:
        """Name -> process group id of every running subprocess."""
        return {name: proc.pid for name, proc in self.procs.items()}

    def client(self, *, timeout: float = 60.0) -> httpx.Client:
        """An httpx client on the API with the key."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=timeout,
        )

    def describe_failure(self) -> str:
        """The log tails of every process (for an error message)."""
        parts = [f"=== {name} ===\n{proc.tail()}" for name, proc in self.procs.items()]
        parts += [f"=== stopped worker ===\n{t}" for t in self._stopped_logs]
        return "\n".join(parts)
