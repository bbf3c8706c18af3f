"""The upload sweep is on beat's schedule and its task deletes abandoned uploads.

The worker modules are imported in a fresh interpreter configured by the environment (as
``celery -A worker.celery_app`` would be), on a migrated SQLite database and local storage;
the task is called directly (Celery runs a called task synchronously in this process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.databases import migrate

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json
    from datetime import timedelta
    import sqlalchemy as sa
    from core.db.models import Image, utcnow
    from core.services import images, keys
    from worker import tasks
    from worker.celery_app import app, get_sessions, get_store, settings

    sessions, store = get_sessions(), get_store()
    with sessions() as session:
        tenant = keys.authenticate(session, keys.create_key(session, tenant_name="acme"))
        old = images.presign_upload(session, store, tenant_id=tenant.id,
                                    public_base_url="http://x", expires_s=900).image.id
        new = images.presign_upload(session, store, tenant_id=tenant.id,
                                    public_base_url="http://x", expires_s=900).image.id
    store.put(images.upload_key(old), b"abandoned bytes")
    with sessions.begin() as session:
        session.execute(sa.update(Image).where(Image.id == old)
                        .values(created_at=utcnow() - timedelta(hours=25)))
    tasks.sweep_uploads()
    with sessions() as session:
        left = {str(i) for i in session.scalars(sa.select(Image.id))}
    entry = app.conf.beat_schedule["diffall-uploads-sweep"]
    print(json.dumps({
        "task": entry["task"], "schedule": entry["schedule"],
        "registered": entry["task"] in app.tasks,
        "old_row": str(old) in left, "new_row": str(new) in left,
        "old_bytes": store.exists(images.upload_key(old)),
    }))
    """
)


def test_beat_runs_the_upload_sweep_and_it_deletes_abandoned_uploads(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'diffall.db'}"
    migrate(database_url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DIFFALL_")},
        "DIFFALL_ENV": "test",
        "DIFFALL_DATA_DIR": str(tmp_path / "data"),
        "DIFFALL_DATABASE_URL": database_url,
        "DIFFALL_BROKER_URL": f"filesystem://{tmp_path / 'broker'}",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "task": "diffall.uploads.sweep",
        "schedule": 3600.0,
        "registered": True,
        "old_row": False,
        "new_row": True,
        "old_bytes": False,
    }
