"""How many comparison worker processes run: ``DIFFALL_WORKER__CONCURRENCY`` or CPUs + 1."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from core.config import Settings, WorkerSettings
from core.services.jobqueue import make_celery_app


def test_default_is_one_process_more_than_the_usable_cpus() -> None:
    assert WorkerSettings().processes == len(os.sched_getaffinity(0)) + 1


def test_concurrency_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings(concurrency=5).processes == 5
    monkeypatch.setenv("DIFFALL_WORKER__CONCURRENCY", "7")
    settings = Settings()
    assert settings.worker.processes == 7
    # Celery's pool size when no --concurrency is given (compose's worker).
    assert make_celery_app(settings).conf.worker_concurrency == 7


@pytest.mark.parametrize("bad", [0, -1, 257])
def test_concurrency_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(ValidationError, match="concurrency"):
        WorkerSettings(concurrency=bad)
