"""``GET /v1/heatmap-legend.svg``: the legend for a tolerance, behind the API key like every
other ``/v1`` read, with a strict CSP; bad parameters are a 422 problem."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.support.api import Api, assert_problem


def test_legend_for_a_tolerance(sqlite_api: Api) -> None:
    response = sqlite_api.client.get(
        "/v1/heatmap-legend.svg", params={"tolerance": 0.2}, headers=sqlite_api.auth()
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert response.headers["x-content-type-options"] == "nosniff"
    root = ET.fromstring(response.text)
    title = root.find("{http://www.w3.org/2000/svg}title")
    assert title is not None and "tolerance 20 % (51.0 of 255 levels)" in (title.text or "")
    default = sqlite_api.client.get("/v1/heatmap-legend.svg", headers=sqlite_api.auth())
    assert default.status_code == 200 and "tolerance 10 %" in default.text
    off = sqlite_api.client.get(
        "/v1/heatmap-legend.svg", params={"antialiasing": "false"}, headers=sqlite_api.auth()
    )
    assert "detection was off" in off.text and "detection was off" not in default.text


def test_legend_needs_a_key_and_a_tolerance_in_range(sqlite_api: Api) -> None:
    assert_problem(sqlite_api.client.get("/v1/heatmap-legend.svg"), 401, "unauthorized")
    for bad in ("1", "-0.5", "abc"):
        response = sqlite_api.client.get(
            "/v1/heatmap-legend.svg", params={"tolerance": bad}, headers=sqlite_api.auth()
        )
        assert_problem(response, 422, "validation_error")


def test_the_sdk_reads_the_legend_from_the_api(sqlite_api: Api) -> None:
    from diffall.client import DiffallClient

    # The SDK over the app's own in-process transport: the request the SDK builds meets the
    # route the API serves (parameters, Accept, the key).
    transport = sqlite_api.client._transport  # starlette's TestClient transport
    with DiffallClient(
        str(sqlite_api.client.base_url), sqlite_api.key(), transport=transport
    ) as client:
        svg = client.heatmap_legend(tolerance=0.05, antialiasing=False)
    assert "tolerance 5 % (12.8 levels)" in svg and "detection was off" in svg
