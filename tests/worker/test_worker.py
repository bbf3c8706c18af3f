"""A real Celery worker process on PostgreSQL, Redis and S3 (moto): jobs run, fail for good,
survive SIGKILL, end ``worker_crashed`` after three deaths, are re-sent by the sweeper, and
interactive work goes before batch work."""

from __future__ import annotations

import json
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from core.config import LimitsSettings
from core.db.models import Comparison, ComparisonState
from core.imaging import compare
from core.services import batches, images
from core.services.batches import BatchItem
from core.services.options import engine_options
from core.services.tasknames import (
    ENQUEUE_BATCH,
    QUEUE_INTERACTIVE,
    QUEUE_MAINTENANCE,
    RUN_COMPARISON,
    SWEEP,
    WEBHOOK_DELIVER,
)
from tests.support.brokers import redis_messages
from tests.support.images import corrupt_png, edited_png, jpeg, photo, png_bytes
from tests.support.tenants import make_tenant
from tests.support.workers import WorkerEnv, WorkerProcess, submit_pair

LIMITS = LimitsSettings()


def _final(row: Comparison) -> bool:
    return row.state.is_final


@cache
def _slow_pair() -> tuple[bytes, bytes]:
    """A 4000x3000 JPEG pair compared in align mode: about 1.5 s of work (decode, features,
    warp, metrics), long enough to kill the worker mid-job."""
    return jpeg(photo(4000, 3000, seed=1)), jpeg(photo(4000, 3000, seed=2))


def _submit(env: WorkerEnv, a: bytes, b: bytes, options: dict[str, Any] | None = None) -> uuid.UUID:
    return submit_pair(env, a, b, options=options)


def _submit_slow(env: WorkerEnv) -> uuid.UUID:
    return _submit(env, *_slow_pair(), {"mode": "align"})


def _niceness(pid: int) -> int:
    # /proc/PID/stat: the 19th field is the nice value (after the command in parentheses).
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


def test_pool_processes_run_nicer_than_their_parent(
    redis_worker_env: WorkerEnv, redis_worker: WorkerProcess
) -> None:
    # worker.nice (default 10): on a machine shared with the API, comparisons yield the CPU.
    parent = redis_worker.process.pid
    children = redis_worker.children()
    assert children
    # A pool process sets it in its start-up hook, which may run just after " ready.".
    deadline = time.monotonic() + 20
    while True:
        seen = {child: _niceness(child) for child in children}
        if all(nice == _niceness(parent) + 10 for nice in seen.values()):
            break
        assert time.monotonic() < deadline, (seen, _niceness(parent))
        time.sleep(0.1)


def test_messages_with_malformed_arguments_are_dropped(
    redis_worker_env: WorkerEnv, redis_worker: WorkerProcess
) -> None:
    env = redis_worker_env
    bad = [
        (RUN_COMPARISON, ["not-a-uuid"], QUEUE_INTERACTIVE),
        (ENQUEUE_BATCH, [12], QUEUE_MAINTENANCE),
        (WEBHOOK_DELIVER, [str(uuid.uuid4()), "nope"], QUEUE_MAINTENANCE),
    ]
    for name, args, queue in bad:
        env.queue.app.send_task(name, args=args, queue=queue)
    deadline = time.monotonic() + 30
    while redis_worker.log_path.read_text().count("task.bad_argument") < len(bad):
        assert time.monotonic() < deadline, redis_worker.log_tail()
        time.sleep(0.1)
    # Logged once each, not retried, and the worker goes on with real work.
    cid = _submit(env, png_bytes(64, 48, seed=41), edited_png(64, 48, seed=41))
    assert env.wait_for(cid, _final, worker=redis_worker).state is ComparisonState.SUCCEEDED
    assert redis_worker.log_path.read_text().count("task.bad_argument") == len(bad)


def test_a_comparison_runs_to_succeeded_with_the_engines_scores(
    redis_worker_env: WorkerEnv, redis_worker: WorkerProcess
) -> None:
    env = redis_worker_env
    a, b = png_bytes(96, 72, seed=11), edited_png(96, 72, seed=11)
    cid = _submit(env, a, b, {"mode": "pixel"})
    row = env.wait_for(cid, _final, worker=redis_worker)
    assert row.state is ComparisonState.SUCCEEDED, (row.error_code, row.error_message)
    # The reference: the engine in this process, on the same bytes and options.
    expected = compare(a, b, engine_options(row.options))
    reference = expected.to_dict()
    assert row.result is not None
    for key in ("ssim", "psnr", "histogram_similarity", "changed_ratio", "verdict", "regions"):
        assert row.result[key] == reference[key], key
    assert env.store.get(f"heatmaps/{cid}.png") == expected.heatmap_png
    assert (row.attempt, row.crash_count) == (1, 0)
    # Structured logs: every line about this job carries its id.
    lines = [
        json.loads(line)
        for line in redis_worker.log_path.read_text().splitlines()
        if str(cid) in line and line.startswith("{")
    ]
    assert {entry["event"] for entry in lines} >= {"comparison.claimed", "comparison.succeeded"}
    assert all(entry["comparison_id"] == str(cid) for entry in lines)


def test_a_corrupt_image_fails_after_exactly_one_attempt(
    redis_worker_env: WorkerEnv, redis_worker: WorkerProcess
) -> None:
    env = redis_worker_env
    cid = _submit(env, png_bytes(64, 48, seed=2), corrupt_png(64, 48, seed=2))
    row = env.wait_for(cid, _final, worker=redis_worker)
    assert (row.state, row.error_code) == (ComparisonState.FAILED, "corrupt_image")
    assert (row.attempt, row.crash_count) == (1, 0)
    assert row.result is None and row.error_message


def test_a_worker_killed_mid_job_still_succeeds_with_one_result(
    redis_worker_env: WorkerEnv, redis_worker: WorkerProcess
) -> None:
    env = redis_worker_env
    cid = _submit_slow(env)
    env.wait_for(cid, lambda r: r.state is ComparisonState.RUNNING, worker=redis_worker, poll=0.02)
    redis_worker.kill_child()
    # reject_on_worker_lost gives the message back; the new pool process claims it again.
    row = env.wait_for(cid, _final, worker=redis_worker, timeout=60)
    assert row.state is ComparisonState.SUCCEEDED, (row.error_code, row.error_message)
    assert (row.attempt, row.crash_count) == (2, 1)
    assert row.result is not None and row.heatmap_key == f"heatmaps/{cid}.png"
    assert env.store.exists(row.heatmap_key)


def test_a_job_that_kills_its_worker_three_times_ends_worker_crashed(
    redis_worker_env: WorkerEnv, redis_worker: WorkerProcess
) -> None:
    env = redis_worker_env
    cid = _submit_slow(env)
    for attempt in (1, 2, 3):

        def running(row: Comparison, n: int = attempt) -> bool:
            return row.state is ComparisonState.RUNNING and row.attempt == n

        env.wait_for(cid, running, worker=redis_worker, poll=0.02)
        redis_worker.kill_child()
    row = env.wait_for(cid, _final, worker=redis_worker)
    assert (row.state, row.error_code) == (ComparisonState.FAILED, "worker_crashed")
    assert (row.attempt, row.crash_count) == (3, 3)
    assert row.result is None


def test_the_sweeper_resends_a_job_whose_message_was_lost(
    redis_worker_env: WorkerEnv, redis_worker: WorkerProcess
) -> None:
    env = redis_worker_env
    assert env.redis is not None
    busy = _submit_slow(env)  # keeps the only pool process busy
    env.wait_for(busy, lambda r: r.state is ComparisonState.RUNNING, worker=redis_worker)
    lost = _submit(env, png_bytes(64, 48, seed=21), edited_png(64, 48, seed=21))
    (message,) = [m for m in redis_messages(env.redis, QUEUE_INTERACTIVE) if m.args == [str(lost)]]
    assert env.redis.lrem(message.key, 1, message.raw.decode()) == 1  # the broker lost it
    # Sweeps sent by name every second, as beat does: the first one that runs after the job
    # became stale (queued > 1 s) re-sends it, however long the busy job takes.
    deadline = time.monotonic() + 40
    while not _final(env.row(lost)) and time.monotonic() < deadline:
        env.queue.app.send_task(SWEEP, queue=QUEUE_MAINTENANCE, priority=3)
        time.sleep(1.0)
    row = env.wait_for(lost, _final, worker=redis_worker)
    assert row.state is ComparisonState.SUCCEEDED and row.attempt == 1
    assert env.wait_for(busy, _final, worker=redis_worker).state is ComparisonState.SUCCEEDED


def test_interactive_work_is_served_before_batch_work(
    redis_worker_env: WorkerEnv, redis_worker: WorkerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = redis_worker_env
    # Send the batch through the fan-out task (diffall.batches.enqueue), as large batches are.
    monkeypatch.setattr(batches, "DIRECT_ENQUEUE_MAX", 2)
    busy = _submit_slow(env)
    env.wait_for(busy, lambda r: r.state is ComparisonState.RUNNING, worker=redis_worker)
    # While the only pool process is busy: a batch of four, then one interactive comparison.
    tenant = make_tenant(env.sessions)
    with env.sessions() as session:
        a, _ = images.store_image(
            session,
            env.store,
            tenant_id=tenant.id,
            data=png_bytes(64, 48, seed=31),
            limits=LIMITS,
        )
        b, _ = images.store_image(
            session,
            env.store,
            tenant_id=tenant.id,
            data=edited_png(64, 48, seed=31),
            limits=LIMITS,
        )
        created = batches.create_batch(
            session,
            env.queue,
            tenant_id=tenant.id,
            items=[BatchItem(a=a.id, b=b.id)] * 4,
            metadata=None,
            webhook_url=None,
            max_pairs=10,
        )
    interactive = _submit(env, png_bytes(64, 48, seed=32), edited_png(64, 48, seed=32))
    batch_ids = [o.comparison_id for o in created.items if o.comparison_id]
    rows = [env.wait_for(cid, _final, worker=redis_worker) for cid in [interactive, *batch_ids]]
    assert all(r.state is ComparisonState.SUCCEEDED for r in rows)
    first_batch_start = min(r.started_at for r in rows[1:] if r.started_at)
    assert rows[0].started_at is not None and rows[0].started_at < first_batch_start
    with env.sessions() as session:
        summary = batches.get_batch_summary(session, tenant_id=tenant.id, batch_id=created.batch.id)
    assert summary.progress == 1.0 and summary.batch.completed_at is not None
