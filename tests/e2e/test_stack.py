"""The full stack end to end: the API (uvicorn) and a real Celery worker as processes, on
PostgreSQL, Redis and an S3 server (moto), driven through the Python SDK.

Scores are checked against ``core.imaging.compare`` run here on the same bytes.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from PIL import Image

from core.imaging import CompareOptions, compare
from diffall.client import DiffallClient, DiffallError
from tests.e2e.helpers import (
    JOB_TIMEOUT_S,
    assert_same_scores,
    corrupt_png,
    edited_pair,
    expected_result,
)
from tests.e2e.procs import Service, http_ok, python_argv, service_env, start, wait_until
from tests.s3server import TEST_ACCESS_KEY_ID, TEST_REGION, TEST_SECRET_ACCESS_KEY, free_port

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    base_url: str
    key: str
    services: list[Service]

    def client(self, key: str | None = None) -> DiffallClient:
        return DiffallClient(self.base_url, key or self.key, timeout=20.0)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    migrated_pg_url: str,
    redis_url: str,
    s3_endpoint: str,
) -> Iterator[Stack]:
    """API + worker processes on PostgreSQL, Redis and moto S3; a key made by `diffall keys`."""
    root = tmp_path_factory.mktemp("stack")
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=TEST_REGION,
        aws_access_key_id=TEST_ACCESS_KEY_ID,
        aws_secret_access_key=TEST_SECRET_ACCESS_KEY,
    ).create_bucket(Bucket=bucket)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = service_env(
        {
            "DIFFALL_ENV": "test",
            "DIFFALL_DATA_DIR": str(root / "data"),
            "DIFFALL_DATABASE_URL": migrated_pg_url,
            "DIFFALL_BROKER_URL": redis_url,
            "DIFFALL_STORAGE__BACKEND": "s3",
            "DIFFALL_STORAGE__S3_ENDPOINT_URL": s3_endpoint,
            "DIFFALL_STORAGE__S3_BUCKET": bucket,
            "DIFFALL_STORAGE__S3_REGION": TEST_REGION,
            "DIFFALL_STORAGE__S3_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "DIFFALL_STORAGE__S3_SECRET_ACCESS_KEY": TEST_SECRET_ACCESS_KEY,
            "DIFFALL_API__PUBLIC_BASE_URL": base_url,
        }
    )
    services: list[Service] = []
    try:
        services.append(
            start(
                "worker",
                python_argv(
                    "-m",
                    "celery",
                    "--app=worker.celery_app",
                    "worker",
                    "--pool=prefork",
                    "--concurrency=2",
                    "--queues=interactive,batch,maintenance",
                    f"--hostname=e2e-{uuid.uuid4().hex[:8]}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel=INFO",
                ),
                env=env,
                cwd=root,
                log_dir=root / "logs",
            )
        )
        services.append(
            start(
                "api",
                python_argv(
                    "-m",
                    "uvicorn",
                    "api.main:create_app",
                    "--factory",
                    "--host=127.0.0.1",
                    f"--port={port}",
                ),
                env=env,
                cwd=root,
                log_dir=root / "logs",
            )
        )
        keys = start(
            "keys-create",
            python_argv("-m", "diffall.cli", "keys", "create", "--tenant", "e2e-stack"),
            env=env,
            cwd=root,
            log_dir=root / "logs",
            capture_stdout=True,
        )
        try:
            assert keys.process.wait(timeout=30) == 0, keys.describe()
        finally:
            keys.stop()  # also collects the rest of its stdout
        assert len(keys.stdout_lines) == 1, keys.describe()
        key = keys.stdout_lines[0].strip()
        assert key.startswith("dfa_"), keys.describe()
        wait_until(http_ok(f"{base_url}/healthz"), timeout_s=40, what="the API", services=services)
        yield Stack(base_url, key, services)
    finally:
        for service in services:
            service.stop()


def test_upload_compare_poll_heatmap(stack: Stack, tmp_path: Path) -> None:
    a, b = edited_pair(240, 180, seed=11)
    path_a = tmp_path / "a.png"
    path_a.write_bytes(a)
    with stack.client() as client:
        image_a = client.upload_image(path_a)
        assert (image_a["width"], image_a["height"]) == (240, 180)
        assert client.upload_image(a)["id"] == image_a["id"]  # stored once by content
        queued = client.compare(image_a["id"], b, metadata={"ticket": "E2E-1"})
        assert queued["state"] == "queued" and queued["metadata"] == {"ticket": "E2E-1"}
        done = client.wait(queued["id"], timeout_s=JOB_TIMEOUT_S, poll_s=0.2)
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 1 and done["error"] is None
        want = expected_result(a, b)
        assert done["result"]["verdict"] == "localized_edit"
        assert_same_scores(done["result"], want)
        heatmap = client.heatmap(done["id"])
    assert heatmap[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(heatmap)).size == (240, 180)
    assert heatmap == compare(a, b, CompareOptions()).heatmap_png


def test_batch_with_one_corrupt_pair(stack: Stack) -> None:
    pairs = [edited_pair(160, 120, seed=seed) for seed in range(20, 26)]
    broken = 3
    pairs[broken] = (pairs[broken][0], corrupt_png(pairs[broken][1]))
    with stack.client() as client:
        created = client.create_batch(pairs, metadata={"run": "e2e"})
        assert created["accepted"] == 6 and created["rejected"] == 0, created
        ids = [item["comparison_id"] for item in sorted(created["items"], key=lambda i: i["index"])]
        finals = [client.wait(i, timeout_s=JOB_TIMEOUT_S, poll_s=0.2) for i in ids]
        for index, (final, (a, b)) in enumerate(zip(finals, pairs, strict=True)):
            assert final["batch_id"] == created["id"]
            if index == broken:
                assert final["state"] == "failed", final
                assert final["error"]["code"] == "corrupt_image" and final["result"] is None
                assert final["attempts"] == 1  # a corrupt image is never retried
            else:
                assert final["state"] == "succeeded", final
                assert_same_scores(final["result"], expected_result(a, b))
        batch = client.get_batch(created["id"])
        listed = list(client.iter_comparisons(batch_id=created["id"], limit=4))
        with pytest.raises(DiffallError) as info:
            client.heatmap(ids[broken])
    assert batch["total"] == 6 and batch["progress"] == 1.0
    assert {k: v for k, v in batch["counts"].items() if v} == {"succeeded": 5, "failed": 1}
    assert sum(batch["verdicts"].values()) == 5
    assert batch["completed_at"] is not None
    assert batch["metadata"] == {"run": "e2e"}
    assert sorted(c["id"] for c in listed) == sorted(ids)  # two pages, nothing lost
    assert info.value.status == 404
