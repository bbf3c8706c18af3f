"""Fixtures of the end-to-end tests: fresh PostgreSQL databases, a Redis database, and a live
stack (API and worker processes on them and a moto S3 server, with an API key); the logs of the
service processes are attached to any failed test's report."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Generator, Iterator

import boto3
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.s3server import TEST_ACCESS_KEY_ID, TEST_REGION, TEST_SECRET_ACCESS_KEY, free_port
from tests.support.databases import PG_ADMIN_URL, migrate
from tests.support.processes import (
    RUNNING,
    STARTED,
    Service,
    api_argv,
    http_ok,
    python_argv,
    service_env,
    start,
    wait_until,
)
from tests.support.stack import Stack

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


_FIRST_STARTED = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Remember which processes were started before this test."""
    item.stash[_FIRST_STARTED] = len(STARTED)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach to a failed test's report the logs of the processes it started (stopped or not)
    and of every process still running (e.g. a module's stack)."""
    report = yield
    if report.failed:
        mine = STARTED[item.stash.get(_FIRST_STARTED, len(STARTED)) :]
        shown = mine + [service for service in RUNNING if service not in mine]
        if shown:
            text = "\n".join(service.describe() for service in shown)
            report.sections.append(("service processes", text))
    return report


@pytest.fixture(scope="module")
def fresh_pg_url() -> Iterator[Callable[[], str]]:
    """Make fresh, empty PostgreSQL databases (dropped at the end of the module)."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    names: list[str] = []

    def make() -> str:
        name = f"diffall_e2e_{uuid.uuid4().hex[:12]}"
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except sa.exc.OperationalError as exc:
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc.orig}", pytrace=False)
        names.append(name)
        return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    try:
        yield make
    finally:
        with admin.connect() as connection:
            for name in names:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="module")
def migrated_pg_url(fresh_pg_url: Callable[[], str]) -> str:
    """A fresh PostgreSQL database brought to the latest schema (a copy of the session's
    migrated template)."""
    url = fresh_pg_url()
    migrate(url)
    return url


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis database (1..15) that was empty, flushed afterwards."""
    numbers = list(range(1, 16))
    random.Random().shuffle(numbers)  # any free db will do
    chosen: redis.Redis | None = None
    try:
        for number in numbers:
            client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
            if client.dbsize() == 0:
                chosen = client
                break
            client.close()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}: {exc}", pytrace=False)
    if chosen is None:
        pytest.fail("no empty Redis database among 1..15", pytrace=False)
    number = chosen.connection_pool.connection_kwargs["db"]
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}"
    finally:
        chosen.flushdb()
        chosen.close()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    migrated_pg_url: str,
    redis_url: str,
    s3_endpoint: str,
) -> Iterator[Stack]:
    """API + worker processes on PostgreSQL, Redis and moto S3; a key made by `diffall keys`."""
    root = tmp_path_factory.mktemp("stack")
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=TEST_REGION,
        aws_access_key_id=TEST_ACCESS_KEY_ID,
        aws_secret_access_key=TEST_SECRET_ACCESS_KEY,
    ).create_bucket(Bucket=bucket)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = service_env(
        {
            "DIFFALL_ENV": "test",
            "DIFFALL_DATA_DIR": str(root / "data"),
            "DIFFALL_DATABASE_URL": migrated_pg_url,
            "DIFFALL_BROKER_URL": redis_url,
            "DIFFALL_STORAGE__BACKEND": "s3",
            "DIFFALL_STORAGE__S3_ENDPOINT_URL": s3_endpoint,
            "DIFFALL_STORAGE__S3_BUCKET": bucket,
            "DIFFALL_STORAGE__S3_REGION": TEST_REGION,
            "DIFFALL_STORAGE__S3_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "DIFFALL_STORAGE__S3_SECRET_ACCESS_KEY": TEST_SECRET_ACCESS_KEY,
            "DIFFALL_API__PUBLIC_BASE_URL": base_url,
        }
    )
    services: list[Service] = []
    try:
        services.append(
            start(
                "worker",
                python_argv(
                    "-m",
                    "celery",
                    "--app=worker.celery_app",
                    "worker",
                    "--pool=prefork",
                    "--concurrency=2",
                    "--queues=interactive,batch,maintenance",
                    f"--hostname=e2e-{uuid.uuid4().hex[:8]}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel=INFO",
                ),
                env=env,
                cwd=root,
                log_dir=root / "logs",
            )
        )
        services.append(
            start(
                "api",
                api_argv(port),
                env=env,
                cwd=root,
                log_dir=root / "logs",
            )
        )
        keys = start(
            "keys-create",
            python_argv("-m", "diffall.cli", "keys", "create", "--tenant", "e2e-stack"),
            env=env,
            cwd=root,
            log_dir=root / "logs",
            capture_stdout=True,
        )
        try:
            assert keys.process.wait(timeout=30) == 0, keys.describe()
        finally:
            keys.stop()  # also collects the rest of its stdout
        assert len(keys.stdout_lines) == 1, keys.describe()
        key = keys.stdout_lines[0].strip()
        assert key.startswith("dfa_"), keys.describe()
        wait_until(http_ok(f"{base_url}/healthz"), timeout_s=40, what="the API", services=services)
        yield Stack(base_url, key, services)
    finally:
        for service in services:
            service.stop()
