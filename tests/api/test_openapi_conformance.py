"""The OpenAPI document tells the truth: schemathesis against the live app.

Every operation of ``/openapi.json`` gets requests generated from its schema (valid by the
schema: positive mode), sent to the running app (real database, real Redis broker, local
storage) with a valid API key, and every answer is checked: no 5xx, the body matches the
documented schema, the content type and the status code are documented. Bounded: a few
examples per operation, derandomised (the same requests every run).

Plus the cases the schema admits that used to be refused or mishandled.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.support.api import Api, ApiFactory, assert_problem
from tests.support.images import noise_png

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

#: Generated requests per operation (about 40 operations).
MAX_EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    content_type_conformance,
    status_code_conformance,
]


def _failures_of(api: Api) -> list[str]:
    """Run every operation's generated requests; return one line per failing request."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    headers = api.auth()
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        def run_one(operation: Any = operation) -> Callable[[], None]:
            @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
            @settings(
                max_examples=MAX_EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],
            )
            def check(case: Any) -> None:
                try:
                    case.call_and_validate(headers=headers, checks=CHECKS)
                except (Exception, BaseExceptionGroup) as exc:  # collect, report all at the end
                    failures.append(f"{operation.label}: {str(exc)[:600]}")

            return check

        run_one()()
    return failures


def test_every_operation_conforms_to_its_schema(make_api: ApiFactory, database_url: str) -> None:
    api = make_api(database_url, rate_limit_per_minute=100_000)
    # Something to find: an image, a comparison and a webhook exist, so lists are not empty.
    image = api.upload(noise_png(16, 12, seed=3))
    api.compare(image["id"], image["id"])
    failures = _failures_of(api)
    assert failures == [], "\n\n".join(failures)


def test_requests_the_schema_admits_are_handled_as_documented(sqlite_api: Api) -> None:
    api = sqlite_api
    headers = api.auth()
    # A literal path next to an {id} path: the method is not allowed, the id is not "invalid".
    for method, path, allow in (
        ("GET", "/v1/images/presign", "POST"),
        ("GET", "/v1/webhook-deliveries/recover", "POST"),
        ("PATCH", "/v1/webhooks/default-secret", "GET"),
    ):
        response = api.client.request(method, path, headers=headers)
        assert_problem(response, 405, "method_not_allowed")
        assert allow in response.headers["allow"]
    # An empty presigned upload is refused at once, not stored as a 0-byte image.
    presigned = api.client.post("/v1/images/presign", json={}, headers=headers)
    image_id = presigned.json()["image"]["id"]
    empty = api.client.put(f"/v1/images/{image_id}/content", headers=headers)
    assert_problem(empty, 422, "empty_file")
    # What the schema does not admit is refused with the documented 422.
    assert_problem(
        api.client.post("/v1/batches", json={"pairs": []}, headers=headers), 422, "validation_error"
    )
    spec = api.client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    assert components["BatchCreate"]["properties"]["pairs"]["minItems"] == 1
    update = components["WebhookUpdate"]["properties"]
    assert update["enabled"] == {**update["enabled"], "type": "boolean"}
    assert "anyOf" not in update["enabled"] and "anyOf" not in update["url"]
    # Every error response of every operation is documented as a problem document.
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (
                        method,
                        path,
                        status,
                    )
            if path.startswith("/v1/"):
                assert {"401", "429"} <= set(operation["responses"]), (method, path)


@pytest.mark.parametrize("cursor", ["abc", "not+base64/"])
def test_a_cursor_not_from_a_page_is_a_documented_422(sqlite_api: Api, cursor: str) -> None:
    response = sqlite_api.client.get(
        "/v1/comparisons", params={"cursor": cursor}, headers=sqlite_api.auth()
    )
    assert_problem(response, 422, "invalid_request")


def test_the_options_are_documented_with_type_range_and_default(sqlite_api: Api) -> None:
    spec = sqlite_api.client.get("/openapi.json").json()
    components = spec["components"]["schemas"]

    def options_of(schema: dict[str, Any]) -> dict[str, Any]:
        choices: list[dict[str, Any]] = schema["options"]["anyOf"]
        (found,) = [c for c in choices if c.get("type") != "null"]
        return found

    requests = [
        options_of(components["ComparisonCreate"]["properties"]),
        options_of(components["BatchItemIn"]["properties"]),
    ]
    response = components["ComparisonOut"]["properties"]["options"]
    assert response == {**response, "$ref": "#/components/schemas/ComparisonOptions"}
    for options in [*requests, components["ComparisonOptions"]]:
        assert options["additionalProperties"] is False
        fields = options["properties"]
        assert set(fields) == {"mode", "ignore", "tolerance", "antialiasing", "fail_under"}
        assert all(field["description"] for field in fields.values())
        assert (fields["mode"]["enum"], fields["mode"]["default"]) == (
            ["auto", "pixel", "align"],
            "auto",
        )
        tolerance = fields["tolerance"]
        assert (tolerance["type"], tolerance["minimum"], tolerance["exclusiveMaximum"]) == (
            "number",
            0.0,
            1.0,
        )
        assert tolerance["default"] == 0.1
        assert (fields["antialiasing"]["type"], fields["antialiasing"]["default"]) == (
            "boolean",
            True,
        )
        gate = next(c for c in fields["fail_under"]["anyOf"] if c["type"] == "number")
        assert (gate["minimum"], gate["maximum"]) == (0, 1)
        assert fields["fail_under"].get("default") is None  # no gate unless given
        ignore = fields["ignore"]
        assert (ignore["type"], ignore["maxItems"], ignore["default"]) == ("array", 1000, [])
        x, _, width, _ = ignore["items"]["prefixItems"]
        assert (x["type"], x["minimum"], width["minimum"]) == ("integer", -(10**9), 1)
