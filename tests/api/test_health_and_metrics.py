"""``/healthz`` (no I/O), ``/readyz`` (database, broker, storage), ``/metrics`` (Prometheus)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from core.db.models import ComparisonQueue
from tests.s3server import free_port
from tests.support.api import Api, ApiFactory, TestClient, make_settings, s3_storage
from tests.support.images import noise_png


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_healthz_does_no_io(tmp_path: Path) -> None:
    # An app whose database, broker and storage do not exist still answers /healthz, and
    # never started its lifespan: no resource was opened.
    settings = make_settings(
        data_dir=tmp_path,
        database_url=f"postgresql://nobody@127.0.0.1:{free_port()}/none",
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    client = TestClient(create_app(settings))  # lifespan not entered
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_reports_every_dependency(api: Api) -> None:
    response = api.client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "storage": "ok"},
    }


def test_readyz_is_503_when_storage_is_unreachable(
    make_api: ApiFactory, sqlite_url: str, s3_bucket_factory: Callable[[], str]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    api = make_api(sqlite_url, storage=s3_storage(dead, "no-such-bucket"))
    response = api.client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"] == "ok"
    assert body["checks"]["storage"].startswith("error")


def test_metrics_expose_requests_latency_and_queue_depth(api: Api) -> None:
    a, b = api.upload(noise_png(seed=1)), api.upload(noise_png(seed=2))
    for _ in range(2):
        api.compare(a["id"], b["id"])
    api.client.post(
        "/v1/batches",
        json={"pairs": [{"a": a["id"], "b": b["id"]}] * 3},
        headers=api.auth(),
    )
    comparison_id = api.compare(a["id"], b["id"])["id"]
    api.client.get(f"/v1/comparisons/{comparison_id}", headers=api.auth())
    api.client.get("/v1/no-such-route")
    response = api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert (
        value("diffall_http_requests_total", method="POST", route="/v1/comparisons", status="202")
        == 3
    )
    assert (
        value(
            "diffall_http_requests_total",
            method="GET",
            route="/v1/comparisons/{comparison_id}",
            status="200",
        )
        == 1
    )
    assert (
        value("diffall_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    )
    assert (
        value("diffall_http_request_duration_seconds_count", method="POST", route="/v1/comparisons")
        == 3
    )
    # Gauges read from the database at scrape time.
    assert value("diffall_metrics_database_up") == 1
    assert value("diffall_queue_depth", queue=ComparisonQueue.INTERACTIVE.value) == 3
    assert value("diffall_queue_depth", queue=ComparisonQueue.BATCH.value) == 3
    assert value("diffall_comparisons_running") == 0
    # Ids never become label values (route templates only).
    assert comparison_id not in response.text
    assert not re.search(r"Bearer|dfa_", response.text)
