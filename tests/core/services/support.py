"""Helpers for the service and worker tests: Redis databases, broker messages, test images."""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import redis
from sqlalchemy.orm import Session, sessionmaker

from core.config import LimitsSettings, Settings
from core.db.models import Image, Tenant
from core.services import images, keys
from core.storage import ObjectStore
from tests.core.imaging.photos import photo, png

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


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test: everything under ``tmp_path``, no ``.env`` file read."""
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "env": "test"}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@cache
def png_bytes(
    width: int = 64, height: int = 48, *, seed: int = 0, name: str = "astronaut"
) -> bytes:
    """A PNG photograph made from scikit-image's samples (seeded grain)."""
    return png(photo(width, height, name=name, seed=seed))


def edited_png(width: int = 64, height: int = 48, *, seed: int = 0) -> bytes:
    """The photo of :func:`png_bytes` with a white square painted on it."""
    img = photo(width, height, seed=seed).copy()
    img[height // 4 : height // 2, width // 4 : width // 2] = 255
    return png(img)


def corrupt_png(width: int = 64, height: int = 48, *, seed: int = 0) -> bytes:
    """A PNG whose header and end are intact but whose pixel data is damaged: it passes the
    header check and fails to decode (``corrupt_image``)."""
    data = bytearray(png_bytes(width, height, seed=seed))
    middle = len(data) // 2
    data[middle : middle + 20] = bytes(20)
    return bytes(data)


def make_tenant(sessions: sessionmaker[Session], name: str | None = None) -> Tenant:
    """A new tenant (through ``keys.create_key``)."""
    with sessions() as session:
        token = keys.create_key(session, tenant_name=name or f"t-{uuid.uuid4().hex[:8]}")
        return keys.authenticate(session, token)


def add_image(
    sessions: sessionmaker[Session], store: ObjectStore, tenant_id: uuid.UUID, data: bytes
) -> Image:
    """Store ``data`` as a ready image of the tenant (``images.store_image``)."""
    with sessions() as session:
        image, _ = images.store_image(
            session, store, tenant_id=tenant_id, data=data, limits=LimitsSettings()
        )
        return image
