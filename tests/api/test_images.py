"""``/v1/images``: content-addressed uploads, header refusals, presigned uploads (local and S3)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.support.api import Api, ApiFactory, assert_problem, s3_storage
from tests.support.images import huge_header_png, noise_png


def test_upload_is_stored_once_by_sha256(api: Api) -> None:
    data = noise_png(40, 30, seed=1)
    first = api.client.post(
        "/v1/images", files={"file": ("a.png", data, "image/png")}, headers=api.auth()
    )
    assert first.status_code == 201, first.text
    image = first.json()
    assert image["sha256"] == hashlib.sha256(data).hexdigest()
    assert (image["width"], image["height"], image["format"]) == (40, 30, "PNG")
    assert image["size_bytes"] == len(data) and image["status"] == "ready"
    assert first.headers["location"].endswith(f"/v1/images/{image['id']}")
    # The same bytes again (multipart or raw): the same image.
    again = api.client.post(
        "/v1/images", files={"file": ("other-name.png", data, "image/png")}, headers=api.auth()
    )
    assert again.status_code == 200 and again.json()["id"] == image["id"]
    raw = api.client.post(
        "/v1/images",
        content=data,
        headers=api.auth(**{"Content-Type": "application/octet-stream"}),
    )
    assert raw.status_code == 200 and raw.json()["id"] == image["id"]
    other = api.upload(noise_png(40, 30, seed=2))
    assert other["id"] != image["id"]
    fetched = api.client.get(f"/v1/images/{image['id']}", headers=api.auth())
    assert fetched.status_code == 200 and fetched.json() == image


@pytest.mark.parametrize(
    ("make_data", "status", "code"),
    [
        (lambda: b"", 422, "empty_file"),
        (lambda: b"just some text, not an image\n" * 4, 422, "unsupported_format"),
        (lambda: noise_png(64, 64, seed=5)[:300], 422, "corrupt_image"),
        (huge_header_png, 413, "image_too_large"),
    ],
    ids=["empty", "text", "truncated", "huge-header"],
)
def test_bad_files_are_refused_with_stable_codes(
    make_api: ApiFactory, sqlite_url: str, make_data: Callable[[], bytes], status: int, code: str
) -> None:
    api = make_api(sqlite_url)
    response = api.client.post(
        "/v1/images", files={"file": ("x.png", make_data(), "image/png")}, headers=api.auth()
    )
    assert_problem(response, status, code)


def test_missing_file_field_is_a_validation_error(sqlite_api: Api) -> None:
    response = sqlite_api.client.post(
        "/v1/images", files={"other": ("x.png", b"abc", "image/png")}, headers=sqlite_api.auth()
    )
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["body", "file"]


def test_presigned_upload_on_local_storage(api: Api) -> None:
    client = api.client
    data = noise_png(20, 10, seed=7)
    presigned = client.post("/v1/images/presign", headers=api.auth())
    assert presigned.status_code == 201, presigned.text
    body = presigned.json()
    image_id = body["image"]["id"]
    assert body["image"]["status"] == "pending"
    upload = body["upload"]
    assert upload["method"] == "PUT" and upload["requires_api_key"] is True
    path = httpx.URL(upload["url"]).path
    assert path == f"/v1/images/{image_id}/content"
    # Finalising before the bytes arrived is a conflict.
    finalize_path = httpx.URL(body["finalize_url"]).path
    assert_problem(client.post(finalize_path, headers=api.auth()), 409, "upload_missing")
    put = client.put(path, content=data, headers=api.auth(**upload["headers"]))
    assert put.status_code == 204, put.text
    done = client.post(finalize_path, headers=api.auth())
    assert done.status_code == 200, done.text
    image = done.json()
    assert image["status"] == "ready" and image["sha256"] == hashlib.sha256(data).hexdigest()
    assert (image["width"], image["height"]) == (20, 10)
    # Another tenant can neither upload to nor finalise this image.
    other = api.auth("other-tenant")
    assert_problem(client.put(path, content=data, headers=other), 404, "not_found")
    assert_problem(client.post(finalize_path, headers=other), 404, "not_found")


def test_presigned_upload_of_a_bad_file_is_refused_at_finalize(
    make_api: ApiFactory, sqlite_url: str
) -> None:
    api = make_api(sqlite_url)
    body = api.client.post("/v1/images/presign", headers=api.auth()).json()
    path = httpx.URL(body["upload"]["url"]).path
    put = api.client.put(
        path, content=b"not an image at all", headers=api.auth(**body["upload"]["headers"])
    )
    if put.status_code == 204:  # stored as sent; validated when finalised
        finalize = api.client.post(httpx.URL(body["finalize_url"]).path, headers=api.auth())
        assert_problem(finalize, 422, "unsupported_format")
    else:  # or refused as soon as it arrives
        assert_problem(put, 422, "unsupported_format")


def test_presigned_upload_on_s3(
    make_api: ApiFactory,
    database_url: str,
    s3_endpoint: str,
    s3_bucket_factory: Callable[[], str],
) -> None:
    api = make_api(database_url, storage=s3_storage(s3_endpoint, s3_bucket_factory()))
    data = noise_png(16, 16, seed=11)
    body = api.client.post("/v1/images/presign", headers=api.auth()).json()
    upload = body["upload"]
    assert upload["url"].startswith(s3_endpoint) and upload["requires_api_key"] is False
    headers = {"Content-Type": "application/octet-stream", **upload["headers"]}
    put = httpx.put(upload["url"], content=data, headers=headers, timeout=10.0)
    assert put.status_code == 200, put.text
    done = api.client.post(httpx.URL(body["finalize_url"]).path, headers=api.auth())
    assert done.status_code == 200, done.text
    assert done.json()["sha256"] == hashlib.sha256(data).hexdigest()
    # A direct upload of bytes already stored returns the existing image.
    direct = api.upload(data)
    assert direct["id"] == done.json()["id"]


def test_images_are_invisible_to_other_tenants(api: Api) -> None:
    image = api.upload(noise_png(8, 8, seed=21))
    response = api.client.get(f"/v1/images/{image['id']}", headers=api.auth("intruder"))
    assert_problem(response, 404, "not_found")
    missing = api.client.get(f"/v1/images/{uuid.uuid4()}", headers=api.auth())
    assert_problem(missing, 404, "not_found")
    # The intruder uploading the same bytes gets an image of its own.
    theirs = api.upload(noise_png(8, 8, seed=21), tenant="intruder")
    assert theirs["id"] != image["id"] and theirs["sha256"] == image["sha256"]
