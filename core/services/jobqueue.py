"""The job queue interface: how the API and the sweeper hand work to the workers.

``JobQueue`` is what services depend on; ``CeleryJobQueue`` sends tasks BY NAME
(``core.services.tasknames``) through a Celery app built by ``make_celery_app``, which both the
API (a producer only) and the worker (which registers the tasks) use, so both agree on broker,
queues and reliability settings.

Interactive before batch
------------------------
Four queues: ``interactive`` (single comparisons), ``batch``, ``maintenance`` (the sweeper
and the fan-out of large batches, ``diffall.batches.enqueue``) and ``big`` (pairs above
``worker.big_image_pixels``, single or batch: ``core.services.routing``).
``big`` has a worker of its own, of concurrency 1 (``diffall serve``'s ``big`` child,
compose's ``worker-big``): big jobs run one at a time and never take a process of the
interactive workers, so an interactive comparison waits at most for the engine runs already
under way on those workers, never for a big job.
A comparison worker consumes the other three (``-Q interactive,batch,maintenance``) and, with
``worker_prefetch_multiplier=1`` and late acks, only fetches a message when one of its pool
processes is free. Which message it fetches then is decided by the broker:

- **Redis** (production): every message carries a broker priority set by its queue
  (:data:`QUEUE_PRIORITY`: interactive 0, maintenance 3, batch 6; on Redis 0 is served first).
  Kombu's Redis transport keeps one list per queue and priority step and polls them with one
  ``BRPOP`` whose keys are ordered priority-major, so a free worker always takes an interactive
  message, then maintenance work, before any batch message, whatever the order given to ``-Q``.
  ``queue_order_strategy='priority'`` keeps the key order fixed (no round-robin rotation), so
  the order is deterministic within one priority too. A 10,000-pair batch therefore delays an
  interactive comparison by at most the run time of the jobs already executing.
- **Filesystem** (used only when nothing is configured outside ``diffall serve``, which runs a
  private Redis server: ``diffall.embedded_broker``): the transport has no priorities and
  polls the queues round-robin, one message at a time; interactive work is not strictly first,
  but it is never stuck behind a batch: between two of its fetches a worker takes at most one
  message from each other queue.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from celery import Celery
from kombu import Exchange, Queue
from kombu.exceptions import KombuError

from core.config import REDIS_SCHEMES, Settings, ensure_broker_folders
from core.db.models import ComparisonQueue, utcnow
from core.services.errors import Unavailable
from core.services.tasknames import (
    ENQUEUE_BATCH,
    QUEUE_BATCH,
    QUEUE_BIG,
    QUEUE_INTERACTIVE,
    QUEUE_MAINTENANCE,
    RECOVER,
    RUN_COMPARISON,
    SWEEP,
    WEBHOOK_DELIVER,
    WEBHOOK_DISPATCH,
)

__all__ = [
    "PRIORITY_STEPS",
    "QUEUE_PRIORITY",
    "BatchJobQueue",
    "BulkJobQueue",
    "CeleryDeliveryQueue",
    "CeleryJobQueue",
    "JobQueue",
    "Producer",
    "QueueDepth",
    "broker_flags_redeliveries",
    "make_celery_app",
    "open_producer",
]

#: Broker priority of each queue's messages (Redis: 0 is served first; see the module docstring).
QUEUE_PRIORITY: dict[str, int] = {
    QUEUE_INTERACTIVE: 0,
    QUEUE_MAINTENANCE: 3,
    QUEUE_BATCH: 6,
    # Its own worker consumes nothing else: the priority only orders it should a worker be
    # given ``-Q big`` with other queues (then it waits like batch work).
    QUEUE_BIG: 6,
}
#: Priority steps of the Redis transport: one list per queue and step.
PRIORITY_STEPS: list[int] = [0, 3, 6, 9]

#: Publishing: seconds to wait for a broker connection, retries and their spacing (seconds).
PUBLISH_CONNECT_TIMEOUT_S = 2.0
PUBLISH_RETRY_POLICY: dict[str, float] = {
    "max_retries": 2,
    "interval_start": 0.0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
#: ``Connection.ensure_connection`` arguments of a quick check: one retry, at once.
_ENSURE_ONCE: dict[str, Any] = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
    "timeout": PUBLISH_CONNECT_TIMEOUT_S,
}
#: Messages buffered per Redis pipeline round trip by bulk enqueues.
BULK_PUBLISH_CHUNK = 1000
#: Filesystem broker: seconds between two polls of the queue folder by a worker.
FILESYSTEM_POLLING_INTERVAL_S = 0.2


class JobQueue(Protocol):
    """Hands comparison jobs to workers."""

    def enqueue_comparison(self, comparison_id: uuid.UUID, queue: ComparisonQueue) -> None:
        """Send the run task for ``comparison_id`` on ``queue``.

        Raises ``core.services.errors.Unavailable`` when the broker cannot be reached (the
        caller leaves the row ``queued``: the sweeper re-sends it later).
        """
        ...

    def ping(self) -> None:
        """Raise ``Unavailable`` if the broker is unreachable (readiness probe)."""
        ...


@runtime_checkable
class BulkJobQueue(Protocol):
    """Optional extension of :class:`JobQueue`: send many jobs in few broker round trips."""

    def enqueue_comparisons(
        self, comparison_ids: Sequence[uuid.UUID], queue: ComparisonQueue
    ) -> None:
        """Send the run task of every id on ``queue``; ``Unavailable`` if the broker is down
        (then some of the messages may have been sent)."""
        ...


@runtime_checkable
class BatchJobQueue(Protocol):
    """Optional extension of :class:`JobQueue`: let a worker send a large batch's jobs."""

    def enqueue_batch(self, batch_id: uuid.UUID) -> None:
        """Send one task that sends the run task of every ``queued`` comparison of the batch
        (``diffall.batches.enqueue``, maintenance queue); ``Unavailable`` if the broker is
        down."""
        ...


@runtime_checkable
class QueueDepth(Protocol):
    """Optional extension of :class:`JobQueue`: how many messages wait in a queue."""

    def depth(self, queue: ComparisonQueue) -> int | None:
        """Messages waiting in ``queue`` (not counting those a worker holds), or None when the
        broker cannot tell."""
        ...


@runtime_checkable
class BrokerStart(Protocol):
    """Optional extension of :class:`JobQueue`: when the broker's server last started."""

    def broker_started_at(self) -> datetime | None:
        """When the broker's server started (a Redis restarted without persistence has lost
        every message sent before), or None when the broker cannot tell."""
        ...


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def broker_flags_redeliveries(app: Celery) -> bool:
    """Whether the app's broker marks redelivered messages (``delivery_info['redelivered']``).

    Redis does (a message given back after its worker was lost, or after the visibility
    timeout, carries the flag); the filesystem transport does not.

    Parameters
    ----------
    app
        An app made by :func:`make_celery_app`.

    Returns
    -------
    bool
        True when a missing flag really means "first delivery".
    """
    return _scheme(str(app.conf.broker_url or "")) in REDIS_SCHEMES


def make_celery_app(settings: Settings, *, name: str = "diffall") -> Celery:
    """A Celery app configured from settings: broker, queues, reliability settings.

    acks late, reject on worker lost, prefetch 1, soft/hard time limits, visibility timeout
    longer than the hard limit, no result backend (Postgres is the source of truth), JSON only.
    Interactive work is served before batch work (see the module docstring). No beat schedule
    here: the worker's app sets it (``worker.schedule``). No tasks are registered here: the
    worker registers them (``worker.tasks``), producers send them by name.

    Parameters
    ----------
    settings
        Broker URL and options, worker time limits; for the filesystem
        broker its folders are created.
    name
        The app's main name.

    Returns
    -------
    Celery
        The configured app (no connection is opened until it is used).
    """
    broker_url = settings.broker_url_resolved
    scheme = _scheme(broker_url)
    ensure_broker_folders(settings)
    transport_options: dict[str, Any] = dict(settings.broker_transport_options)
    if scheme in REDIS_SCHEMES:
        transport_options.setdefault("queue_order_strategy", "priority")
        transport_options.setdefault("priority_steps", list(PRIORITY_STEPS))
        transport_options.setdefault("socket_connect_timeout", PUBLISH_CONNECT_TIMEOUT_S)
        transport_options.setdefault("socket_keepalive", True)
        # The visibility timeout (from the settings) must outlive the hard time limit.
        timeout = int(transport_options.get("visibility_timeout", 0))
        if timeout <= settings.worker.hard_time_limit_s:
            raise ValueError(
                f"broker visibility_timeout ({timeout} s) must exceed the hard time limit "
                f"({settings.worker.hard_time_limit_s} s)"
            )
    elif scheme == "filesystem":
        transport_options.setdefault("polling_interval", FILESYSTEM_POLLING_INTERVAL_S)

    worker = settings.worker
    queues = [
        Queue(q, Exchange(q, type="direct"), routing_key=q)
        for q in (QUEUE_INTERACTIVE, QUEUE_BATCH, QUEUE_MAINTENANCE, QUEUE_BIG)
    ]
    app = Celery(name, broker=broker_url, set_as_current=False)
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=PUBLISH_CONNECT_TIMEOUT_S,
        # Reliability (DESIGN section 4).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        # Pool size when the command line gives none (compose's worker): worker.processes.
        worker_concurrency=worker.processes,
        # A lost broker connection (Redis restarted, a network blip) does not stop the jobs
        # running: they finish and write their result (the database, not the broker, is the
        # truth; the attempt fences a redelivered copy). Cancelling them left their leases
        # to expire and counted a crash that never happened (bench/chaos.py, redis_restart).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_soft_time_limit=worker.soft_time_limit_s,
        task_time_limit=worker.hard_time_limit_s,
        # Postgres is the source of truth: no result backend, nothing stored.
        result_backend=None,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        # JSON only, never pickle.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        # Queues and routing: every message goes to a declared queue with its priority.
        task_queues=queues,
        task_default_queue=QUEUE_MAINTENANCE,
        task_default_exchange=QUEUE_MAINTENANCE,
        task_default_routing_key=QUEUE_MAINTENANCE,
        task_create_missing_queues=False,
        task_default_priority=QUEUE_PRIORITY[QUEUE_MAINTENANCE],
        task_routes={
            SWEEP: {"queue": QUEUE_MAINTENANCE},
            RECOVER: {"queue": QUEUE_MAINTENANCE},
            ENQUEUE_BATCH: {"queue": QUEUE_MAINTENANCE},
        },
        task_publish_retry=True,
        task_publish_retry_policy=dict(PUBLISH_RETRY_POLICY),
        worker_hijack_root_logger=True,
        worker_send_task_events=False,
        enable_utc=True,
        timezone="UTC",
    )
    return app


_BROKER_ERRORS: tuple[type[BaseException], ...] = (KombuError, OSError, TimeoutError)
try:  # redis-py's errors do not all derive from OSError
    import redis.exceptions as _redis_exceptions

    _BROKER_ERRORS = (*_BROKER_ERRORS, _redis_exceptions.RedisError)
except ImportError:  # pragma: no cover - celery[redis] installs it
    pass


@contextlib.contextmanager
def _map_broker_errors(action: str) -> Iterator[None]:
    """Translate kombu / redis / socket errors raised in the block into ``Unavailable``."""
    try:
        yield
    except _BROKER_ERRORS as exc:
        raise Unavailable(f"the job queue is unavailable ({action}): {exc}") from exc


class CeleryJobQueue:
    """``JobQueue`` over a Celery app (``app.send_task`` by name; never imports worker code).

    Also implements :class:`BulkJobQueue`, :class:`BatchJobQueue` and :class:`QueueDepth`.

    Parameters
    ----------
    app
        An app made by :func:`make_celery_app` (the producer needs no registered tasks).
    """

    def __init__(self, app: Celery) -> None:
        self.app = app

    def _send(self, comparison_id: uuid.UUID, queue: str, **options: Any) -> None:
        self.app.send_task(
            RUN_COMPARISON,
            args=[str(comparison_id)],
            queue=queue,
            priority=QUEUE_PRIORITY[queue],
            retry=True,
            retry_policy=dict(PUBLISH_RETRY_POLICY),
            **options,
        )

    def enqueue_comparison(self, comparison_id: uuid.UUID, queue: ComparisonQueue) -> None:
        """Send ``diffall.comparisons.run`` with ``[str(comparison_id)]`` to ``queue``.

        Retries the publish briefly (about 1 s in all), then raises ``Unavailable``.
        """
        name = ComparisonQueue(queue).value
        with _map_broker_errors("send"):
            self._send(comparison_id, name)

    def enqueue_comparisons(
        self, comparison_ids: Sequence[uuid.UUID], queue: ComparisonQueue
    ) -> None:
        """Send the run task of every id to ``queue``, pipelined where the broker allows it
        (Redis: :data:`BULK_PUBLISH_CHUNK` messages per round trip).

        Raises ``Unavailable`` if the broker fails; some messages may have been sent.
        """
        if not comparison_ids:
            return
        name = ComparisonQueue(queue).value
        priority = QUEUE_PRIORITY[name]
        # The same message send_task builds (protocol 2, by name, routed like send_task: the
        # default exchange with the queue name as routing key), without send_task's per-call
        # routing and declaring, which cost more than the publish itself (~4x at 10,000).
        create_message = self.app.amqp.create_task_message
        with _map_broker_errors("bulk send"), self.app.producer_or_acquire() as producer:
            producer.connection.ensure_connection(**_ENSURE_ONCE)
            batch = getattr(producer, "batch", None)
            context: contextlib.AbstractContextManager[Any] = (
                batch(max_size=BULK_PUBLISH_CHUNK)
                if callable(batch) and producer.supports_batch_publish
                else contextlib.nullcontext()
            )
            with context:
                for comparison_id in comparison_ids:
                    task_id = str(uuid.uuid4())
                    message = create_message(
                        task_id, RUN_COMPARISON, args=[str(comparison_id)], kwargs={}
                    )
                    producer.publish(
                        message.body,
                        exchange="",
                        routing_key=name,
                        headers=message.headers,
                        priority=priority,
                        serializer="json",
                        retry=False,
                        **message.properties,
                    )

    def enqueue_batch(self, batch_id: uuid.UUID) -> None:
        """Send ``diffall.batches.enqueue`` with ``[str(batch_id)]`` to ``maintenance`` (served
        before batch work); a worker then sends the batch's run tasks in bulk."""
        with _map_broker_errors("send"):
            self.app.send_task(
                ENQUEUE_BATCH,
                args=[str(batch_id)],
                queue=QUEUE_MAINTENANCE,
                priority=QUEUE_PRIORITY[QUEUE_MAINTENANCE],
                retry=True,
                retry_policy=dict(PUBLISH_RETRY_POLICY),
            )

    def depth(self, queue: ComparisonQueue | str) -> int | None:
        """Messages waiting in ``queue`` (all priorities), or None if the broker cannot tell.

        Messages a worker has fetched (running, or held for a retry countdown) are not
        counted. Raises ``Unavailable`` if the broker cannot be reached.
        """
        name = queue.value if isinstance(queue, ComparisonQueue) else str(queue)
        with _map_broker_errors("queue depth"), self.app.connection_for_read() as connection:
            connection.ensure_connection(**_ENSURE_ONCE)
            declared = connection.default_channel.queue_declare(queue=name, passive=False)
            count = getattr(declared, "message_count", None)
        return None if count is None else int(count)

    def broker_started_at(self) -> datetime | None:
        """When the Redis server started (``INFO server``'s uptime, to the second: a start
        within the second before is reported up to 1 s late), or None for another broker.

        Raises ``Unavailable`` if the broker cannot be reached.
        """
        if not broker_flags_redeliveries(self.app):
            return None
        with _map_broker_errors("broker start"), self.app.connection_for_read() as connection:
            connection.ensure_connection(**_ENSURE_ONCE)
            client = getattr(connection.default_channel, "client", None)
            if client is None:
                return None
            uptime_s = int(client.info("server")["uptime_in_seconds"])
        return utcnow() - timedelta(seconds=uptime_s)

    def ping(self) -> None:
        """Raise ``Unavailable`` unless the broker answers (Redis: a round trip; filesystem:
        the queue folder is listed)."""
        with _map_broker_errors("ping"), self.app.connection_for_read() as connection:
            connection.ensure_connection(**_ENSURE_ONCE)
            connection.default_channel.queue_declare(queue=QUEUE_INTERACTIVE, passive=False)


class CeleryDeliveryQueue:
    """``DeliveryQueue`` over a Celery app: ``diffall.webhooks.deliver`` by name, on the
    maintenance queue (served before batch work).

    Parameters
    ----------
    app
        An app made by :func:`make_celery_app`.
    expires_s
        Seconds after which a message not yet started is dropped by the worker (its claim has
        expired by then: the dispatcher sends a new one). None: never.
    """

    def __init__(self, app: Celery, *, expires_s: float | None = None) -> None:
        self.app = app
        self.expires_s = expires_s

    def send_delivery(self, delivery_id: uuid.UUID, claim_id: uuid.UUID) -> None:
        """Send ``diffall.webhooks.deliver`` with ``[delivery_id, claim_id]``."""
        with _map_broker_errors("send webhook delivery"):
            self.app.send_task(
                WEBHOOK_DELIVER,
                args=[str(delivery_id), str(claim_id)],
                queue=QUEUE_MAINTENANCE,
                priority=QUEUE_PRIORITY[QUEUE_MAINTENANCE],
                retry=True,
                retry_policy=dict(PUBLISH_RETRY_POLICY),
                expires=self.expires_s,
            )

    def kick(self) -> None:
        """Send one ``diffall.webhooks.dispatch`` (a dispatcher pass as soon as possible)."""
        with _map_broker_errors("send webhook dispatch"):
            self.app.send_task(
                WEBHOOK_DISPATCH,
                queue=QUEUE_MAINTENANCE,
                priority=QUEUE_PRIORITY[QUEUE_MAINTENANCE],
                retry=True,
                retry_policy=dict(PUBLISH_RETRY_POLICY),
            )


class Producer:
    """A process's connection to the broker for sending only (the API): its job queue and
    its webhook delivery queues, on one Celery app closed with :meth:`close`.

    The rest of the code sees the protocols (``JobQueue``, ``webhooks.dispatch.DeliveryQueue``);
    only this module and ``worker/`` know Celery.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.jobs = CeleryJobQueue(app)

    def deliveries(self, *, expires_s: float | None = None) -> CeleryDeliveryQueue:
        """A webhook delivery queue whose messages expire after ``expires_s`` seconds."""
        return CeleryDeliveryQueue(self.app, expires_s=expires_s)

    def close(self) -> None:
        """Release the broker connections."""
        self.app.close()


def open_producer(settings: Settings) -> Producer:
    """A :class:`Producer` on the configured broker (no connection is made yet; creates the
    filesystem broker's folders if that broker is configured)."""
    return Producer(make_celery_app(settings))
