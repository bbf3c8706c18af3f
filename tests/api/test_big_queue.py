"""``DIFFALL_WORKER__BIG_IMAGE_PIXELS`` reaches the routing through the API: pairs above it are
sent to the ``big`` queue by ``POST /v1/comparisons`` and ``POST /v1/batches``, the others to
``interactive`` / ``batch`` (real Redis; the rule itself: tests/core/services/test_routing.py)."""

from __future__ import annotations

from core.config import WorkerSettings
from core.services.tasknames import QUEUE_BATCH, QUEUE_BIG, QUEUE_INTERACTIVE
from tests.support.api import ApiFactory
from tests.support.brokers import messages_for
from tests.support.images import noise_png

#: 32 x 24 images are at the threshold; a 33 x 24 image is above it.
THRESHOLD = 32 * 24


def test_the_setting_routes_single_and_batch_submissions(
    make_api: ApiFactory, sqlite_url: str
) -> None:
    api = make_api(sqlite_url, worker=WorkerSettings(big_image_pixels=THRESHOLD))
    a, b = api.upload(noise_png(seed=1)), api.upload(noise_png(seed=2))
    wide = api.upload(noise_png(33, 24, seed=3))

    def routing_key(comparison_id: str) -> str:
        (message,) = messages_for(api.broker, comparison_id)
        return str(message["routing_key"])

    singles = {}
    for name, other in (("at", b), ("above", wide)):
        response = api.client.post(
            "/v1/comparisons", json={"a": a["id"], "b": other["id"]}, headers=api.auth()
        )
        assert response.status_code == 202, response.text
        singles[name] = response.json()["id"]
    assert routing_key(singles["at"]) == QUEUE_INTERACTIVE
    assert routing_key(singles["above"]) == QUEUE_BIG

    response = api.client.post(
        "/v1/batches",
        json={"pairs": [{"a": a["id"], "b": b["id"]}, {"a": wide["id"], "b": a["id"]}]},
        headers=api.auth(),
    )
    assert response.status_code == 202, response.text
    at, above = (item["comparison_id"] for item in response.json()["items"])
    assert routing_key(at) == QUEUE_BATCH
    assert routing_key(above) == QUEUE_BIG
