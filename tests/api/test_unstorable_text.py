"""Text PostgreSQL cannot store (a NUL character, a lone surrogate) is a 422, never a 500, on
both backends alike (schemathesis found a batch whose metadata held U+0000 answering 500)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.api import Api, assert_problem
from tests.support.images import noise_png


def _post(api: Api, path: str, body: dict[str, Any]) -> Any:
    """POST ``body`` as ASCII JSON (``\\ud800`` escapes: the way a client sends a lone
    surrogate; httpx's own encoder would refuse to)."""
    headers = {**api.auth(), "Content-Type": "application/json"}
    return api.client.post(path, content=json.dumps(body), headers=headers)


@pytest.mark.parametrize(
    "metadata",
    [{"note": "a\u0000b"}, {"\u0000": 1}, {"deep": [{"x": "\ud800"}]}],
    ids=["nul-value", "nul-key", "lone-surrogate"],
)
def test_unstorable_metadata_is_refused(api: Api, metadata: dict[str, Any]) -> None:
    a, b = api.upload(noise_png(seed=41)), api.upload(noise_png(seed=42))
    single = _post(api, "/v1/comparisons", {"a": a["id"], "b": b["id"], "metadata": metadata})
    body = assert_problem(single, 422, {"invalid_request", "invalid_metadata", "validation_error"})
    assert "metadata" in body["detail"] or "JSON" in body["detail"]
    batch = _post(
        api, "/v1/batches", {"pairs": [{"a": a["id"], "b": b["id"]}], "metadata": metadata}
    )
    assert_problem(batch, 422, {"invalid_request", "invalid_metadata", "validation_error"})
    # A pair's own metadata refuses that pair only, not the batch.
    per_pair = _post(
        api,
        "/v1/batches",
        {
            "pairs": [
                {"a": a["id"], "b": b["id"], "metadata": metadata},
                {"a": a["id"], "b": b["id"]},
            ]
        },
    )
    if "\ud800" in json.dumps(metadata):  # not even valid JSON text: the whole body is refused
        assert_problem(per_pair, 422, "validation_error")
        return
    assert per_pair.status_code == 202, per_pair.text
    items = per_pair.json()["items"]
    assert items[0]["error"]["code"] == "invalid_metadata" and items[1].get("error") is None


def test_a_webhook_description_with_a_nul_is_refused(api: Api) -> None:
    # A public IP literal: checked without DNS.
    body = {"url": "https://93.184.216.34/x", "description": "a\u0000b"}
    response = _post(api, "/v1/webhooks", body)
    assert_problem(response, 422, {"invalid_request", "validation_error"})
