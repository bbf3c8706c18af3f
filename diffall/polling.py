"""How the SDK paces its polls while it waits for a comparison or a batch.

The delay starts at ``poll_s`` and grows by :data:`BACKOFF_FACTOR` per poll that saw no change,
up to ``max_poll_s``; a change (a new state, more comparisons done) starts again from
``poll_s``. A server's ``Retry-After`` (on a 200 while a comparison runs, on a 429 or 503) is a
floor: the client never polls sooner than it asks. Each delay is then stretched by a random
share of up to :data:`POLL_JITTER` (never shortened), so that clients started together (a CI
matrix, a batch's pollers) do not keep arriving in the same instant. No delay goes past the
deadline.

Polls are conditional (:class:`Conditional`): each GET after the first sends the ``ETag`` of
the copy it holds in ``If-None-Match``, and an unchanged resource answers ``304 Not Modified``
with no body, which the client reads as the copy it already has.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

__all__ = [
    "BACKOFF_FACTOR",
    "DEFAULT_MAX_POLL_S",
    "POLL_JITTER",
    "RETRY_STATUSES",
    "Backoff",
    "Conditional",
]

#: Growth of the delay per poll that saw nothing change.
BACKOFF_FACTOR: Final = 1.5
#: Default longest delay between two polls, in seconds.
DEFAULT_MAX_POLL_S: Final = 10.0
#: A poll's delay is stretched by a random share of up to this (0.2: 1 s becomes 1.0-1.2 s).
POLL_JITTER: Final = 0.2
#: Answers that mean "ask again later" while waiting (rate limited, unavailable, a proxy's
#: gateway errors): the wait goes on, honouring ``Retry-After``, instead of raising.
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})


@dataclass
class Backoff:
    """Delays between polls, in seconds.

    Parameters
    ----------
    first_s
        The first delay, and the delay after a change (> 0).
    max_s
        The longest delay (>= ``first_s``).
    factor
        Growth per unchanged poll (>= 1).
    jitter
        Each delay is stretched by a random share of up to this (>= 0; 0: exact delays).
    rng
        Where the random shares come from (a seeded ``random.Random`` for repeatable delays).
    """

    first_s: float
    max_s: float = DEFAULT_MAX_POLL_S
    factor: float = BACKOFF_FACTOR
    jitter: float = 0.0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    _current: float = field(init=False)

    def __post_init__(self) -> None:
        if self.first_s <= 0:
            raise ValueError(f"poll_s must be > 0 seconds, got {self.first_s}")
        if self.max_s < self.first_s:
            raise ValueError(f"max_poll_s ({self.max_s}) must be >= poll_s ({self.first_s})")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")
        self._current = self.first_s

    def changed(self) -> None:
        """Something moved: poll at ``first_s`` again."""
        self._current = self.first_s

    def next_delay(self, retry_after_s: float | None = None) -> float:
        """The delay before the next poll: the current one, at least ``retry_after_s``,
        stretched by up to ``jitter``; then grow the current delay for the poll after."""
        delay = self._current
        self._current = min(self._current * self.factor, self.max_s)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return delay * (1.0 + self.jitter * self.rng.random()) if self.jitter else delay


@dataclass
class Conditional:
    """The copy of a polled resource and its ``ETag``, for conditional GETs.

    ``headers()`` goes on each poll; ``body(response)`` is the resource the answer means: the
    new body of a 200 (kept, with its ``ETag``), or the kept copy for a 304.
    """

    etag: str | None = None
    last: dict[str, Any] | None = None

    def headers(self) -> dict[str, str]:
        """``If-None-Match`` with the kept ETag (none before a copy with an ETag is held)."""
        if self.etag is None or self.last is None:
            return {}
        return {"If-None-Match": self.etag}

    def body(self, response: httpx.Response) -> dict[str, Any]:
        """The resource the answer stands for.

        Raises
        ------
        ValueError
            A 304 when no copy is held, or a body that is not a JSON object.
        """
        if response.status_code == 304:
            if self.last is None:
                raise ValueError("304 Not Modified without a copy to keep")
            return dict(self.last)
        body = response.json()
        if not isinstance(body, dict):
            raise ValueError("the answer is not a JSON object")
        self.etag = response.headers.get("ETag")
        self.last = dict(body)
        return body
