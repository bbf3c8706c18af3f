"""The faults of ``bench/chaos.py``: each one acts on a :class:`bench.lib.chaos_stack.ChaosStack`
(and the webhook receiver) and returns once it is healed, saying how many worker processes it
killed (the crashes a job may rightly count)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.lib.chaos_stack import ChaosStack
from bench.lib.hook_receiver import Receiver

__all__ = ["FAULTS", "Context", "Injected"]


@dataclass
class Context:
    """What a fault acts on."""

    stack: ChaosStack
    receiver: Receiver
    outage_s: float
    restart_after_s: float
    say: Callable[[str], None]


@dataclass
class Injected:
    """What a fault did: the jobs it could rightly count as crashed."""

    killed_processes: int = 0
    notes: list[str] = field(default_factory=list)


def _running_jobs(stack: ChaosStack) -> int:
    import sqlalchemy as sa

    query = sa.text("SELECT count(*) FROM comparisons WHERE state = 'running'")
    return int(stack.rows(query)[0][0])


def _wait_for_running_job(ctx: Context, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _running_jobs(ctx.stack) > 0:
            return True
        time.sleep(0.05)
    return False


def fault_worker_child(ctx: Context) -> Injected:
    """SIGKILL one pool process while a job runs."""
    busy = _wait_for_running_job(ctx)
    pid = random.choice(ctx.stack.worker_children())
    ctx.stack.kill_worker_child(pid)
    return Injected(1, [f"killed pool process {pid}" + ("" if busy else " (no job seen running)")])


def fault_worker_parent(ctx: Context) -> Injected:
    """SIGKILL the worker's process group; start it again after ``restart_after_s``."""
    busy = _wait_for_running_job(ctx)
    ctx.stack.kill_worker()
    time.sleep(ctx.restart_after_s)
    ctx.stack.start_worker()
    note = "killed the worker" + ("" if busy else " (no job seen running)")
    return Injected(ctx.stack.workers, [note])


def fault_redis_restart(ctx: Context) -> Injected:
    """Restart Redis empty."""
    assert ctx.stack.redis is not None
    ctx.stack.redis.restart()
    return Injected()


def fault_postgres_stop(ctx: Context) -> Injected:
    """Stop PostgreSQL for the outage, then start it."""
    assert ctx.stack.postgres is not None
    ctx.stack.postgres.stop(mode="fast")
    time.sleep(ctx.outage_s)
    ctx.stack.postgres.start()
    return Injected()


def fault_s3_unreachable(ctx: Context) -> Injected:
    """Freeze the S3 server for the outage."""
    ctx.stack.freeze("s3")
    try:
        time.sleep(ctx.outage_s)
    finally:
        ctx.stack.thaw("s3")
    return Injected()


def fault_receiver(ctx: Context) -> Injected:
    """The receiver answers 500, then is down, then healthy (``outage_s`` each)."""
    ctx.receiver.answer = 500
    time.sleep(ctx.outage_s)
    ctx.receiver.go_down()
    try:
        time.sleep(ctx.outage_s)
    finally:
        ctx.receiver.answer = 200
        ctx.receiver.come_up()
    return Injected()


#: Fault name -> injector (it returns once the fault is healed).
FAULTS: dict[str, Callable[[Context], Injected]] = {
    "worker_child": fault_worker_child,
    "worker_parent": fault_worker_parent,
    "redis_restart": fault_redis_restart,
    "postgres_stop": fault_postgres_stop,
    "s3_unreachable": fault_s3_unreachable,
    "receiver": fault_receiver,
}
