"""The beat schedule is one table (``worker.schedule``) and the worker's app runs exactly it.

The worker's app is imported in a fresh interpreter configured by the environment (as
``celery -A worker.celery_app beat`` would be), so its intervals come from ``DIFFALL_*``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from core.config import Settings
from core.services.jobqueue import QUEUE_PRIORITY
from core.services.tasknames import (
    QUEUE_MAINTENANCE,
    RECOVER,
    SWEEP,
    SWEEP_UPLOADS,
    WEBHOOK_DISPATCH,
)
from worker.schedule import beat_schedule, beat_schedule_filename

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json
    from worker.celery_app import app
    app.loader.import_default_modules()  # what `celery -A worker.celery_app beat` loads
    conf = app.conf
    print(json.dumps({
        "entries": {
            name: [entry["task"], entry["schedule"], entry["task"] in app.tasks]
            for name, entry in conf.beat_schedule.items()
        },
        "filename": conf.beat_schedule_filename,
    }))
    """
)


def _settings(tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        env="test",
        data_dir=tmp_path / "data",
        worker={"sweep_interval_s": 7, "recover_interval_s": 11},
        webhooks={"dispatch_interval_s": 3},
    )


def test_the_schedule_lists_every_periodic_task(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    schedule = beat_schedule(settings)
    assert {name: (e["task"], e["schedule"]) for name, e in schedule.items()} == {
        "diffall-sweep": (SWEEP, 7.0),
        "diffall-recover": (RECOVER, 11.0),
        "diffall-webhooks-dispatch": (WEBHOOK_DISPATCH, 3.0),
        "diffall-uploads-sweep": (SWEEP_UPLOADS, 3600.0),
    }
    for entry in schedule.values():  # maintenance work; a late pass expires after one interval
        assert entry["options"] == {
            "queue": QUEUE_MAINTENANCE,
            "priority": QUEUE_PRIORITY[QUEUE_MAINTENANCE],
            "expires": entry["schedule"],
        }
    assert beat_schedule_filename(settings) == str(tmp_path / "data" / "celerybeat-schedule")


def test_the_worker_app_runs_that_schedule_and_registers_its_tasks(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DIFFALL_")},
        "DIFFALL_ENV": "test",
        "DIFFALL_DATA_DIR": str(tmp_path / "data"),
        "DIFFALL_DATABASE_URL": f"sqlite:///{tmp_path / 'diffall.db'}",
        "DIFFALL_BROKER_URL": f"filesystem://{tmp_path / 'broker'}",
        "DIFFALL_WORKER__SWEEP_INTERVAL_S": "7",
        "DIFFALL_WORKER__RECOVER_INTERVAL_S": "11",
        "DIFFALL_WEBHOOKS__DISPATCH_INTERVAL_S": "3",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {
        name: [entry["task"], entry["schedule"], True]
        for name, entry in beat_schedule(_settings(tmp_path)).items()
    }
    assert result == {
        "entries": expected,
        "filename": str(tmp_path / "data" / "celerybeat-schedule"),
    }
