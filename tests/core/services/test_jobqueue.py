"""The Celery app's configuration and CeleryJobQueue against a real Redis and the filesystem
broker."""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from core.db.models import ComparisonQueue
from core.services.errors import Unavailable
from core.services.jobqueue import (
    BULK_PUBLISH_CHUNK,
    QUEUE_PRIORITY,
    CeleryJobQueue,
    broker_flags_redeliveries,
    make_celery_app,
)
from core.services.tasknames import (
    QUEUE_BATCH,
    QUEUE_BIG,
    QUEUE_INTERACTIVE,
    QUEUE_MAINTENANCE,
    RUN_COMPARISON,
)
from tests.support.brokers import redis_messages
from tests.support.settings import settings_for


def test_reliability_settings(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        broker_url="redis://127.0.0.1:6379/0",
        worker={"soft_time_limit_s": 40, "hard_time_limit_s": 50, "sweep_interval_s": 7},
    )
    conf = make_celery_app(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (40, 50)
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.broker_transport_options["queue_order_strategy"] == "priority"
    assert conf.task_ignore_result and conf.result_backend is None
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.broker_connection_retry_on_startup
    assert {q.name for q in conf.task_queues} == {
        QUEUE_INTERACTIVE,
        QUEUE_BATCH,
        QUEUE_MAINTENANCE,
        QUEUE_BIG,
    }
    # Every queue of a comparison has its broker priority.
    assert {q.value for q in ComparisonQueue} <= set(QUEUE_PRIORITY)
    # The beat schedule is the worker's (tests/worker/test_schedule.py).
    assert not conf.beat_schedule
    # Interactive first, then the sweeper, then batches (Redis serves priority 0 first).
    assert (
        QUEUE_PRIORITY[QUEUE_INTERACTIVE]
        < QUEUE_PRIORITY[QUEUE_MAINTENANCE]
        < QUEUE_PRIORITY[QUEUE_BATCH]
    )
    assert broker_flags_redeliveries(make_celery_app(settings))


def test_filesystem_broker_settings(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    app = make_celery_app(settings)
    options = app.conf.broker_transport_options
    assert app.conf.broker_url == "filesystem://"
    assert Path(options["data_folder_in"]).is_dir()  # ensure_broker_folders ran
    assert Path(options["control_folder"]).is_dir()
    assert not broker_flags_redeliveries(app)


def test_messages_are_sent_by_name_with_the_queue_priority(
    queue: CeleryJobQueue, redis_client: redis.Redis
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    queue.enqueue_comparison(first, ComparisonQueue.INTERACTIVE)
    queue.enqueue_comparisons([second, first], ComparisonQueue.BATCH)
    interactive = redis_messages(redis_client, QUEUE_INTERACTIVE)
    batch = redis_messages(redis_client, QUEUE_BATCH)
    assert [(m.task, m.args, m.priority) for m in interactive] == [
        (RUN_COMPARISON, [str(first)], 0)
    ]
    assert [(m.task, m.args, m.priority) for m in batch] == [
        (RUN_COMPARISON, [str(second)], 6),
        (RUN_COMPARISON, [str(first)], 6),
    ]
    # The bulk path builds the same message as send_task (only ids and origin differ).
    single = json.loads(interactive[0].raw)
    bulk = json.loads(batch[0].raw)
    assert set(single["headers"]) == set(bulk["headers"])
    assert single["properties"]["delivery_info"]["exchange"] == ""
    assert bulk["properties"]["delivery_info"] == {"exchange": "", "routing_key": QUEUE_BATCH}
    assert queue.depth(ComparisonQueue.BATCH) == 2
    assert queue.depth(ComparisonQueue.INTERACTIVE) == 1
    queue.ping()


def test_bulk_enqueue_is_pipelined(
    queue: CeleryJobQueue, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bulk path sends its messages in a few round trips to Redis, not one per message.

    Round trips are counted by a spy on redis-py's send (the real send still runs), not timed.
    """
    sends = 0
    real_send = redis.connection.AbstractConnection.send_packed_command

    def counting_send(self: Any, command: Any, check_health: bool = True) -> None:
        nonlocal sends
        sends += 1
        real_send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting_send)
    ids = [uuid.uuid4() for _ in range(2000)]
    for comparison_id in ids[:50]:
        queue.enqueue_comparison(comparison_id, ComparisonQueue.BATCH)
    one_by_one, sends = sends, 0
    queue.enqueue_comparisons(ids, ComparisonQueue.BATCH)
    bulk = sends
    assert queue.depth(ComparisonQueue.BATCH) == 2050
    assert one_by_one >= 50  # at least one round trip per message on the single path
    # 2,000 messages in chunks of BULK_PUBLISH_CHUNK: a handful of round trips in all.
    assert bulk <= 2 * math.ceil(len(ids) / BULK_PUBLISH_CHUNK) + 4, bulk


def test_broker_outage_is_unavailable_quickly(dead_queue: CeleryJobQueue) -> None:
    for call in (
        lambda: dead_queue.enqueue_comparison(uuid.uuid4(), ComparisonQueue.INTERACTIVE),
        lambda: dead_queue.enqueue_comparisons([uuid.uuid4()], ComparisonQueue.BATCH),
        dead_queue.ping,
        lambda: dead_queue.depth(ComparisonQueue.BATCH),
    ):
        start = time.perf_counter()
        with pytest.raises(Unavailable):
            call()
        assert time.perf_counter() - start < 3.0


def test_filesystem_broker_queue(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    queue = CeleryJobQueue(make_celery_app(settings))
    queue.ping()
    ids = [uuid.uuid4() for _ in range(3)]
    queue.enqueue_comparison(ids[0], ComparisonQueue.INTERACTIVE)
    queue.enqueue_comparisons(ids[1:], ComparisonQueue.BATCH)
    assert queue.depth(ComparisonQueue.INTERACTIVE) == 1
    assert queue.depth(ComparisonQueue.BATCH) == 2
    files = sorted((settings.broker_dir / "queue").iterdir())
    assert [f.name.rsplit(".", 2)[1] for f in files].count(QUEUE_BATCH) == 2
    bodies = [json.loads(f.read_bytes()) for f in files]
    assert {b["headers"]["task"] for b in bodies} == {RUN_COMPARISON}
