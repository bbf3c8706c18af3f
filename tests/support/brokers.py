"""Redis for the tests: claim a database of one's own (1..15), and read the Celery messages
waiting in a queue as kombu's Redis transport stores them; a private ``redis-server`` to restart
(:class:`tests.support.servers.PrivateRedis`, re-exported)."""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from tests.support.servers import PrivateRedis

__all__ = [
    "REDIS_HOST",
    "REDIS_PORT",
    "Message",
    "PrivateRedis",
    "claimed_redis_db",
    "messages_for",
    "queued_messages",
    "redis_messages",
    "redis_url",
]

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
#: Key set in a Redis database while a test run owns it (others see it is not empty).
CLAIM_KEY = "diffall-test-claim"

#: Redis's separator between a queue name and its priority step (kombu's default).
PRIORITY_SEP = "\x06\x16"


@contextmanager
def claimed_redis_db() -> Iterator[int]:
    """Claim an empty Redis database (1..15), flush it on exit.

    Fails the test if Redis is down or no database is free (never skips).
    """
    numbers = list(range(1, 16))
    random.shuffle(numbers)
    token = uuid.uuid4().hex
    for number in numbers:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
        try:
            if client.dbsize() == 0 and client.set(CLAIM_KEY, token, nx=True):
                try:
                    yield number
                finally:
                    client.flushdb()
                    client.close()
                return
        finally:
            client.close()
    raise RuntimeError("no empty Redis database among 1..15")


def redis_url(db: int) -> str:
    """The broker URL of Redis database ``db``."""
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


@dataclass(frozen=True)
class Message:
    """A Celery task message as stored by kombu's Redis transport."""

    key: str
    task: str
    args: list[Any]
    priority: int | None
    raw: bytes


def redis_messages(client: redis.Redis, queue: str) -> list[Message]:
    """Every message waiting in ``queue`` (all priority lists), oldest first per list."""
    found: list[Message] = []
    for raw_key in sorted(client.keys(f"{queue}*")):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        if key != queue and not key.startswith(queue + PRIORITY_SEP):
            continue
        if client.type(raw_key) != b"list":
            continue
        for item in reversed(client.lrange(raw_key, 0, -1)):  # LPUSH + BRPOP: the tail is next
            raw = item if isinstance(item, bytes) else str(item).encode()
            payload = json.loads(raw)
            body = json.loads(base64.b64decode(payload["body"]))
            found.append(
                Message(
                    key=key,
                    task=payload["headers"]["task"],
                    args=body[0],
                    priority=payload["properties"].get("priority"),
                    raw=raw,
                )
            )
    return found


def queued_messages(client: redis.Redis) -> list[dict[str, Any]]:
    """Every Celery message waiting in the Redis database: task name, args, list key."""
    messages: list[dict[str, Any]] = []
    for raw_key in client.scan_iter(count=1000):
        if client.type(raw_key) != b"list":
            continue
        for raw in client.lrange(raw_key, 0, -1):
            try:
                envelope = json.loads(raw)
                body = envelope["body"]
                if envelope.get("properties", {}).get("body_encoding") == "base64":
                    body = base64.b64decode(body)
                args = json.loads(body)[0]
            except (ValueError, KeyError, TypeError, IndexError):
                continue
            messages.append(
                {
                    "key": raw_key.decode(),
                    "task": envelope.get("headers", {}).get("task"),
                    "args": args,
                    "routing_key": envelope.get("properties", {})
                    .get("delivery_info", {})
                    .get("routing_key"),
                }
            )
    return messages


def messages_for(client: redis.Redis, comparison_id: str) -> list[dict[str, Any]]:
    """The queued messages whose first argument is ``comparison_id``."""
    return [m for m in queued_messages(client) if m["args"] and m["args"][0] == comparison_id]
