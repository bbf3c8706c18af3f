"""The webhook retry policy: what the dispatcher and the send task take from the settings, and
the schedule of attempts (waits with jitter, ``Retry-After`` honoured up to 24 h).
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from core.config import DEFAULT_WEBHOOK_SCHEDULE_S
from core.netguard.classify import IPNetwork

if TYPE_CHECKING:
    from core.config import Settings

__all__ = [
    "MAX_RETRY_AFTER_S",
    "RETRY_AFTER_STATUSES",
    "DeliveryPolicy",
    "parse_retry_after",
    "retry_delay_s",
]

#: Longest ``Retry-After`` honoured, in seconds (a longer one is capped: 24 h).
MAX_RETRY_AFTER_S: Final = 86_400.0
#: Statuses whose ``Retry-After`` header is honoured.
RETRY_AFTER_STATUSES: Final = frozenset({429, 503})

_rng = random.SystemRandom()


@dataclass(frozen=True)
class DeliveryPolicy:
    """What the dispatcher and the send task need from the settings.

    Attributes
    ----------
    schedule_s
        Wait before each attempt, counted from the previous one, in seconds (its length is the
        number of attempts).
    jitter
        Spread of each wait as a fraction in [0, 1): 0.2 gives +-20 %.
    timeout_s
        Total time a receiver has to answer, in seconds.
    disable_after_s
        Continuous failure after which an endpoint is disabled, in seconds.
    lease_s
        Seconds a claimed delivery is reserved for its task (> ``timeout_s``).
    base_url
        The API's public base URL, for the payload's links.
    allowed_networks
        Networks reachable despite the SSRF rules.
    """

    schedule_s: tuple[float, ...] = DEFAULT_WEBHOOK_SCHEDULE_S
    jitter: float = 0.2
    timeout_s: float = 15.0
    disable_after_s: float = 5 * 24 * 3600.0
    lease_s: float = 60.0
    base_url: str = "http://127.0.0.1:8000"
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        """Build the policy from ``settings.webhooks``, ``settings.api.public_base_url`` and
        ``settings.webhook_allowed_networks``."""
        hooks = settings.webhooks
        return cls(
            schedule_s=tuple(hooks.retry_schedule_s),
            jitter=hooks.jitter,
            timeout_s=hooks.timeout_s,
            disable_after_s=hooks.disable_after_s,
            lease_s=hooks.lease_s,
            base_url=settings.api.public_base_url,
            allowed_networks=settings.webhook_allowed_networks,
        )

    @property
    def max_attempts(self) -> int:
        """Attempts of a delivery before it ends ``failed`` (the schedule's length)."""
        return len(self.schedule_s)


def retry_delay_s(
    policy: DeliveryPolicy,
    attempts_done: int,
    *,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the next attempt after ``attempts_done`` attempts failed.

    Parameters
    ----------
    policy
        The schedule and jitter.
    attempts_done
        Attempts made so far (>= 1); the wait is ``schedule_s[attempts_done]`` (the last entry
        beyond the schedule, e.g. after manual retries).
    retry_after_s
        The receiver's ``Retry-After`` in seconds, if any: the wait is at least that (capped at
        :data:`MAX_RETRY_AFTER_S`).
    rng
        Random source of the jitter (default: the system's).

    Returns
    -------
    float
        The wait, >= 0: the scheduled wait times a uniform factor in
        [1 - jitter, 1 + jitter], raised to ``retry_after_s``.
    """
    schedule = policy.schedule_s
    base = schedule[min(max(attempts_done, 0), len(schedule) - 1)]
    factor = (rng or _rng).uniform(1.0 - policy.jitter, 1.0 + policy.jitter)
    delay = max(0.0, base * factor)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return delay


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date).

    Parameters
    ----------
    value
        The header value, or None.
    now
        Current time (aware UTC), for dates.

    Returns
    -------
    float or None
        Seconds (>= 0), or None when absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
