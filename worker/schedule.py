"""The ONE beat schedule: every periodic task of the service, its interval and its queue.

Run beat once (``celery -A worker.celery_app worker -B``, as ``diffall serve`` does, or a
``celery -A worker.celery_app beat`` process); it sends these tasks, by name, to the
``maintenance`` queue. A pass that waited longer than its interval expires (the next one
supersedes it). The API never runs beat and does not need the schedule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import Settings
from core.services.jobqueue import QUEUE_PRIORITY
from core.services.tasknames import (
    QUEUE_MAINTENANCE,
    RECOVER,
    SWEEP,
    SWEEP_UPLOADS,
    WEBHOOK_DISPATCH,
)
from core.services.upload_sweep import UPLOAD_SWEEP_INTERVAL_S

__all__ = ["beat_schedule", "beat_schedule_filename"]


def _entry(task: str, interval_s: float) -> dict[str, Any]:
    return {
        "task": task,
        "schedule": float(interval_s),
        "options": {
            "queue": QUEUE_MAINTENANCE,
            "priority": QUEUE_PRIORITY[QUEUE_MAINTENANCE],
            "expires": float(interval_s),
        },
    }


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule`` for these settings.

    Parameters
    ----------
    settings
        The intervals, in seconds (> 0): ``worker.sweep_interval_s`` (re-send lost and
        stale jobs), ``worker.recover_interval_s`` (crashed runs),
        ``webhooks.dispatch_interval_s`` (due webhook deliveries); the abandoned-upload sweep
        runs every :data:`core.services.upload_sweep.UPLOAD_SWEEP_INTERVAL_S` (hourly).

    Returns
    -------
    dict
        Entry name -> ``{"task": name, "schedule": seconds, "options": {queue, priority,
        expires}}``.
    """
    return {
        "diffall-sweep": _entry(SWEEP, settings.worker.sweep_interval_s),
        "diffall-recover": _entry(RECOVER, settings.worker.recover_interval_s),
        "diffall-webhooks-dispatch": _entry(
            WEBHOOK_DISPATCH, settings.webhooks.dispatch_interval_s
        ),
        "diffall-uploads-sweep": _entry(SWEEP_UPLOADS, UPLOAD_SWEEP_INTERVAL_S),
    }


def beat_schedule_filename(settings: Settings) -> str:
    """Where beat keeps its state: ``<data_dir>/celerybeat-schedule``."""
    return str(Path(settings.data_dir) / "celerybeat-schedule")
