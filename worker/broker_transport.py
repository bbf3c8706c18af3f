"""kombu's Redis transport, kept able to reconnect after Redis restarts (the worker's broker).

When a worker loses its Redis connection (Redis restarted, empty or not), Celery's consumer
first *collects* the broken connection (``Connection.collect``: a bounded socket timeout; when
draining the channel's pending ``BRPOP`` times out, the channel stays open while the transport
is detached: ``transport.client = None``), then *closes* it. Closing the channel restores the
messages the worker had not acknowledged yet (a webhook POST in flight on the thread-pool
delivery worker), which needs a new Redis client, built from ``transport.client``: gone, so
``AttributeError("'NoneType' object has no attribute 'hostname'")``, which is not a connection
error, escapes Celery's ``ignore_errors`` and stops the worker ("Unrecoverable error"; two of
five Redis restarts in the issue-11 soak, every restart with a delivery in flight in
``tests/worker/test_delivery_worker_redis_restarts.py``).

:class:`Transport` keeps the connection details it was created with after it is detached, so
that restore (and the late acks of tasks finishing meanwhile) either works on the new server
or fails with a connection error, which Celery ignores before it reconnects. Nothing is lost
either way: with ack emulation the unacknowledged messages live in Redis until restored, and
if Redis lost them, the database (leases, the sweeper, the delivery dispatcher) sends the work
again. Selected by :mod:`worker.celery_app` (``broker_transport``) for ``redis://`` and
``rediss://`` brokers; everything else is kombu's own transport.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

__all__ = ["TRANSPORT", "Transport"]

#: The value of Celery's ``broker_transport`` that selects :class:`Transport`.
TRANSPORT = f"{__name__}:Transport"


class Transport(kombu_redis.Transport):
    """kombu's Redis transport whose ``client`` (the kombu ``Connection`` holding the host,
    port, password and options) survives the transport being detached (set to None)."""

    _kept_client: Any = None

    @property
    def client(self) -> Any:
        """The connection this transport was created for (kept once set)."""
        return self._kept_client

    @client.setter
    def client(self, value: Any) -> None:
        if value is not None:
            self._kept_client = value
