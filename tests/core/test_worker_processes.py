"""How many comparison worker processes run: ``DIFFALL_WORKER__CONCURRENCY`` or CPUs + 1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import Settings, WorkerSettings, usable_cpus
from core.services.jobqueue import make_celery_app


def test_default_is_one_process_more_than_the_usable_cpus() -> None:
    assert WorkerSettings().processes == usable_cpus() + 1
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", None),  # no quota: the affinity mask
        ("100000 100000\n", 1),  # --cpus=1
        ("150000 100000\n", 2),  # --cpus=1.5 rounds up
        ("5000 100000\n", 1),  # a tiny quota is still one CPU
        ("garbage", None),
    ],
)
def test_a_cgroup_quota_caps_the_cpus(tmp_path: Path, cpu_max: str, expected: int | None) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    want = affinity if expected is None else min(affinity, expected)
    assert usable_cpus(path) == want
    assert usable_cpus(tmp_path / "missing") == affinity


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
