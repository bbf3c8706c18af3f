"""Celery worker subprocesses for the worker tests, and the services they share with a test
(see ``tests/worker/conftest.py``); started with :func:`tests.support.processes.start`."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from core.config import DEFAULT_BIG_IMAGE_PIXELS, LimitsSettings, Settings
from core.db.models import Comparison
from core.services import comparisons, images
from core.services.jobqueue import CeleryJobQueue
from core.storage import ObjectStore
from tests.support.processes import ROOT, python_argv, service_env, start
from tests.support.tenants import make_tenant

#: Seconds a worker may take to start (imports, broker connection).
START_TIMEOUT_S = 60.0
#: Queues of a comparison worker (the ``big`` queue has a worker of its own).
WORKER_QUEUES = "interactive,batch,maintenance"


@dataclass
class WorkerEnv:
    """Everything a test needs to talk to the same services as its worker."""

    variables: dict[str, str]
    settings: Settings
    sessions: sessionmaker[Session]
    store: ObjectStore
    queue: CeleryJobQueue
    redis: redis.Redis | None = None
    log_dir: Path = field(default_factory=Path)

    def row(self, comparison_id: uuid.UUID) -> Comparison:
        """The comparison as the database holds it now."""
        with self.sessions() as session:
            return session.get_one(Comparison, comparison_id)

    def wait_for(
        self,
        comparison_id: uuid.UUID,
        predicate: Callable[[Comparison], bool],
        *,
        timeout: float = 40.0,
        worker: WorkerProcess | None = None,
        poll: float = 0.05,
    ) -> Comparison:
        """Poll the row until ``predicate`` holds; fail with the worker's log otherwise."""
        deadline = time.monotonic() + timeout
        row = self.row(comparison_id)
        while not predicate(row):
            if time.monotonic() > deadline:
                log = worker.log_tail() if worker else ""
                pytest.fail(
                    f"comparison {comparison_id} still {row.state} (attempt {row.attempt}, "
                    f"crashes {row.crash_count}) after {timeout} s\n{log}"
                )
            if worker is not None and worker.process.poll() is not None:
                pytest.fail(f"the worker exited ({worker.process.returncode})\n{worker.log_tail()}")
            time.sleep(poll)
            row = self.row(comparison_id)
        return row


def _children(pid: int) -> list[int]:
    """Pids of the live child processes of ``pid`` (read from /proc)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


class WorkerProcess:
    """One ``celery worker`` subprocess (prefork, one child) in its own process group."""

    def __init__(
        self,
        variables: dict[str, str],
        log_path: Path,
        *extra: str,
        queues: str = WORKER_QUEUES,
    ) -> None:
        env = service_env(variables)
        env["PYTHONPATH"] = str(ROOT)
        self.log_path = log_path
        self.service = start(
            log_path.stem,
            python_argv(
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "--pool",
                "prefork",
                "-c",
                "1",
                "-Q",
                queues,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "INFO",
                "-n",
                f"test-{uuid.uuid4().hex[:8]}@%h",
                *extra,
            ),
            env=env,
            cwd=log_path.parent,  # no stray .env file is read
            log_dir=log_path.parent,
        )
        self.process = self.service.process
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while b" ready." not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the worker did not start\n{self.log_tail()}")
            time.sleep(0.1)

    def children(self) -> list[int]:
        """Pids of the pool processes."""
        return _children(self.process.pid)

    def kill_child(self) -> int:
        """SIGKILL the pool process (the job it runs dies with it); returns its pid."""
        children = self.children()
        assert len(children) == 1, children
        os.kill(children[0], signal.SIGKILL)
        return children[0]

    def log_tail(self, lines: int = 60) -> str:
        """The end of the worker's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Kill the worker and its children (the process group it leads) and reap it."""
        self.service.kill()


def new_worker(
    env: WorkerEnv, name: str, *extra: str, queues: str = WORKER_QUEUES
) -> WorkerProcess:
    """Start a worker for ``env`` on ``queues`` (the caller stops it in ``finally``)."""
    return WorkerProcess(env.variables, env.log_dir / f"{name}.log", *extra, queues=queues)


def submit_pair(
    env: WorkerEnv,
    a: bytes,
    b: bytes,
    *,
    options: dict[str, Any] | None = None,
    big_image_pixels: int = DEFAULT_BIG_IMAGE_PIXELS,
) -> uuid.UUID:
    """Store ``a`` and ``b`` for a new tenant and submit their comparison (as the API does:
    the row committed, then the message sent on ``env.queue``); return its id."""
    tenant = make_tenant(env.sessions)
    limits = LimitsSettings()
    with env.sessions() as session:
        stored = [
            images.store_image(session, env.store, tenant_id=tenant.id, data=data, limits=limits)[0]
            for data in (a, b)
        ]
        created = comparisons.create_comparison(
            session,
            env.queue,
            tenant_id=tenant.id,
            image_a_id=stored[0].id,
            image_b_id=stored[1].id,
            options=options,
            metadata=None,
            webhook_url=None,
            big_image_pixels=big_image_pixels,
        )
    return created.id
