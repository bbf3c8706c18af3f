"""The worker's Celery app: ``celery -A worker.celery_app worker -Q interactive,batch,maintenance``,
and ``celery -A worker.celery_app worker -Q big --concurrency=1`` for the pairs above
``worker.big_image_pixels`` (``core.services.routing``), so they run one at a time and never
occupy the comparison workers.

The app comes from :func:`core.services.jobqueue.make_celery_app` (the same configuration the
API produces with); this module adds what only the worker needs:

- the beat schedule (``worker.schedule``: sweeper, recovery, webhook dispatcher, upload sweep);
- the task module (``worker.tasks``, registered under the names of
  ``core.services.tasknames``);
- per-process resources (database engine, object store, job queue), created lazily in each
  pool process after ``fork``: ``worker_process_init`` drops the engine and clients a child
  inherited from its parent (``dispose_engine(close=False)``; storage clients reset);
- logging set up by ``core.logs`` (Celery's ``setup_logging`` signal): the API's format, the
  context bound by the tasks (``comparison_id``, ``task_id``) on every line, routine Celery
  lines at DEBUG; ``worker_ready`` / ``beat_init`` create ``$DIFFALL_SERVE_READY_FILE``.

The periodic sweeper and webhook dispatcher need one beat: ``celery -A worker.celery_app worker
-B ...`` in a single worker (the embedded default, ``diffall serve``), or a separate
``celery -A worker.celery_app beat`` process. Webhook deliveries run on the ``maintenance`` queue,
which comparison workers serve only when no comparison waits: run a worker of their own on
``-Q maintenance --pool=threads`` (``diffall serve`` and compose's ``webhooks`` service do), or
deliveries wait for the whole comparison backlog (bench/bench_webhooks.py: 8.6 s median delay
at 37 comparisons/s on 2 cores without it, 0.05 s with 4 delivery threads).
Recommended worker flags: ``--without-gossip --without-mingle --without-heartbeat`` (the
service does not use them; they only add broker traffic and a start-up delay).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from celery import signals
from sqlalchemy.orm import Session, sessionmaker

from core import logs
from core.config import Settings, get_settings
from core.db.session import dispose_engine, get_sessionmaker
from core.services.factories import store_from_settings
from core.services.jobqueue import CeleryDeliveryQueue, CeleryJobQueue, make_celery_app
from core.services.webhooks.policy import DeliveryPolicy
from core.storage import ObjectStore
from core.storage.cache import CachingObjectStore
from worker import broker_transport
from worker.schedule import beat_schedule, beat_schedule_filename

#: Environment variable naming the file a worker or beat creates once it is up (diffall serve).
READY_FILE_ENV = "DIFFALL_SERVE_READY_FILE"

__all__ = [
    "READY_FILE_ENV",
    "app",
    "configure_logging",
    "get_delivery_queue",
    "get_queue",
    "get_sessions",
    "get_store",
    "reset_resources",
    "settings",
    "webhook_policy",
]

settings: Settings = get_settings()
app = make_celery_app(settings)
app.conf.include = ["worker.tasks"]
if settings.broker_url_resolved.split("://", 1)[0].lower() in ("redis", "rediss"):
    # kombu's Redis transport, able to restore unacknowledged messages after a Redis restart
    # (see worker.broker_transport: the stock one can stop the worker there).
    app.conf.broker_transport = broker_transport.TRANSPORT
# Every periodic task (sweeper, recovery, webhook dispatcher, upload sweep): worker.schedule.
app.conf.beat_schedule = beat_schedule(settings)
app.conf.beat_schedule_filename = beat_schedule_filename(settings)

_lock = threading.Lock()
_store: ObjectStore | None = None
_queue: CeleryJobQueue | None = None
_delivery_queue: CeleryDeliveryQueue | None = None
#: Webhook delivery settings of this worker (schedule, timeout, lease, base URL, networks).
webhook_policy: DeliveryPolicy = DeliveryPolicy.from_settings(settings)


def get_sessions() -> sessionmaker[Session]:
    """This process's session factory on the configured database."""
    return get_sessionmaker(settings.database_url_resolved)


def get_store() -> ObjectStore:
    """This process's object store (created on first use, after fork)."""
    global _store
    with _lock:
        if _store is None:
            _store = CachingObjectStore(
                store_from_settings(settings),
                max_bytes=settings.worker.image_cache_mb * 1024 * 1024,
            )
        return _store


def get_queue() -> CeleryJobQueue:
    """The job queue over this worker's own app (used by the sweeper to re-send jobs)."""
    global _queue
    with _lock:
        if _queue is None:
            _queue = CeleryJobQueue(app)
        return _queue


def get_delivery_queue() -> CeleryDeliveryQueue:
    """Sends webhook deliver tasks over this worker's own app (used by the dispatcher)."""
    global _delivery_queue
    with _lock:
        if _delivery_queue is None:
            _delivery_queue = CeleryDeliveryQueue(app, expires_s=webhook_policy.lease_s)
        return _delivery_queue


def reset_resources() -> None:
    """Forget this process's store and queues; the next use creates new ones."""
    global _store, _queue, _delivery_queue, _lock
    _lock = threading.Lock()  # it may have been copied while held
    store, _store, _queue, _delivery_queue = _store, None, None, None
    reset = getattr(store, "reset", None)
    if callable(reset):
        reset()


def configure_logging(loglevel: int | str | None = None) -> None:
    """Log like every other process of the service (``core.logs``): one format, no secrets,
    Celery's routine lines at DEBUG. ``loglevel`` is the worker's ``--loglevel`` (INFO)."""
    global _loglevel
    if loglevel is not None:
        _loglevel = loglevel
    logs.configure_logging(level=_loglevel)


_loglevel: int | str = "INFO"


@signals.setup_logging.connect
def _on_setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # Connected: Celery leaves logging to us (worker and beat alike).
    configure_logging(loglevel or "INFO")


def _touch_ready_file() -> None:
    """Tell ``diffall serve`` this process is up: create ``$DIFFALL_SERVE_READY_FILE``."""
    path = os.environ.get(READY_FILE_ENV)
    if path:
        Path(path).touch()


@signals.worker_ready.connect
def _on_worker_ready(**_: Any) -> None:
    _touch_ready_file()


@signals.worker_process_init.connect
def _on_worker_process_init(**_: Any) -> None:
    # Comparisons yield the CPU to the API on a shared machine (worker.nice).
    if settings.worker.nice:
        os.nice(settings.worker.nice)
    # Connections and clients inherited from the parent belong to it: drop them unclosed.
    dispose_engine(close=False)
    reset_resources()
    configure_logging()
    # This process's engine now (it imports the database driver, without connecting): the
    # first job's time limit then counts that job only.
    get_sessions()


@signals.worker_process_shutdown.connect
def _on_worker_process_shutdown(**_: Any) -> None:
    dispose_engine()


@signals.beat_init.connect
def _on_beat_init(**_: Any) -> None:
    # The beat schedule file lives in data_dir, which may not exist yet.
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _touch_ready_file()
