"""A big job never delays an interactive one: with a worker on the ``big`` queue (concurrency
1, like ``diffall serve``'s ``big`` child and compose's ``worker-big``) and a comparison worker
on ``interactive,batch,maintenance`` (concurrency 1), an interactive comparison submitted while
a big job runs finishes first. Real worker processes on PostgreSQL, Redis and moto S3."""

from __future__ import annotations

import uuid
from functools import cache

from core.db.models import ComparisonQueue, ComparisonState
from core.services.tasknames import QUEUE_BIG
from tests.support.images import edited_png, jpeg, photo, png_bytes
from tests.support.workers import WorkerEnv, new_worker, submit_pair

#: Pairs above this many pixels are big in this test (the big pair has 12 MP, the small 3 kP).
THRESHOLD = 1_000_000


@cache
def _big_pair() -> tuple[bytes, bytes]:
    """A 4000 x 3000 JPEG pair, compared in align mode: seconds of engine work."""
    return jpeg(photo(4000, 3000, seed=1)), jpeg(photo(4000, 3000, seed=2))


def _submit(env: WorkerEnv, a: bytes, b: bytes, mode: str) -> uuid.UUID:
    return submit_pair(env, a, b, options={"mode": mode}, big_image_pixels=THRESHOLD)


def test_an_interactive_job_finishes_while_a_big_job_runs(redis_worker_env: WorkerEnv) -> None:
    env = redis_worker_env
    big_pair = _big_pair()
    small_pair = png_bytes(64, 48, seed=3), edited_png(64, 48, seed=3)
    interactive_worker = new_worker(env, "interactive-worker")
    big_worker = new_worker(env, "big-worker", queues=QUEUE_BIG)
    try:
        big = _submit(env, *big_pair, mode="align")
        assert env.row(big).queue is ComparisonQueue.BIG
        env.wait_for(big, lambda r: r.state is ComparisonState.RUNNING, worker=big_worker)

        small = _submit(env, *small_pair, mode="pixel")
        assert env.row(small).queue is ComparisonQueue.INTERACTIVE
        done = env.wait_for(small, lambda r: r.state.is_final, worker=interactive_worker)
        assert done.state is ComparisonState.SUCCEEDED, done.error_message
        # The big job was still running when the interactive one was done.
        assert env.row(big).state is ComparisonState.RUNNING

        finished = env.wait_for(big, lambda r: r.state.is_final, timeout=90, worker=big_worker)
        assert finished.state is ComparisonState.SUCCEEDED, finished.error_message
        assert done.finished_at is not None and finished.finished_at is not None
        assert done.finished_at < finished.finished_at
        # Each job ran on its own worker: the big worker's log names only the big job.
        big_log = big_worker.log_path.read_text(errors="replace")
        assert str(big) in big_log and str(small) not in big_log
    finally:
        big_worker.stop()
        interactive_worker.stop()
