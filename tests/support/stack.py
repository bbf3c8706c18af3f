"""The live stack of the end-to-end tests (tests/e2e/conftest.py starts it): where the API is,
a key, its processes; and how long a job may take there."""

from __future__ import annotations

from dataclasses import dataclass

from diffall.client import DiffallClient
from tests.support.processes import Service

__all__ = ["JOB_TIMEOUT_S", "Stack"]

#: Seconds a comparison may take from submission to a final state in a live stack.
JOB_TIMEOUT_S = 45.0


@dataclass
class Stack:
    """The live stack of tests/e2e/conftest.py: where the API is, a key, its processes."""

    base_url: str
    key: str
    services: list[Service]

    def client(self, key: str | None = None) -> DiffallClient:
        """An SDK client on the stack, with ``key`` or the stack's own."""
        return DiffallClient(self.base_url, key or self.key, timeout=20.0)
