"""The full stack end to end: the API (uvicorn) and a real Celery worker as processes, on
PostgreSQL, Redis and an S3 server (moto) (the ``stack`` fixture of tests/e2e/conftest.py),
driven through the Python SDK.

Scores are checked against ``core.imaging.compare`` run here on the same bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from core.imaging import CompareOptions, compare
from diffall.client import DiffallError
from tests.support.images import edited_pair, garbled_png
from tests.support.results import assert_same_scores, expected_result
from tests.support.stack import JOB_TIMEOUT_S, Stack

pytestmark = pytest.mark.slow


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
    pairs[broken] = (pairs[broken][0], garbled_png(pairs[broken][1]))
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
