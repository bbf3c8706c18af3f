"""``diffall batch submit``'s uploads against a scripted API (httpx.MockTransport): each file
once, a refused image becomes a refused pair, and "later" answers (429/503) are retried after
their Retry-After. The real server is exercised in tests/e2e/test_batch_cli.py."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from diffall import batch_cli
from diffall.client import DiffallClient, DiffallError


def _problem(status: int, code: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "detail": code}, headers=headers)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(batch_cli.time, "sleep", slept.append)
    return slept


def _files(tmp_path: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        (tmp_path / name).write_bytes(name.encode())
        paths.append(tmp_path / name)
    return paths


def test_uploads_each_file_once_and_keeps_refusals(tmp_path: Path, sleeps: list[float]) -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = request.read()
        seen.append(body)
        if b"bad.png" in body:
            return _problem(422, "corrupt_image")
        return httpx.Response(201, json={"id": f"id-{len(seen)}"})

    paths = _files(tmp_path, "a.png", "b.png", "bad.png")
    with DiffallClient("http://api.test", "k", transport=httpx.MockTransport(handler)) as client:
        ids, refused = batch_cli._upload_all(client, paths)
    assert len(seen) == 3 and sleeps == []
    assert set(ids) == set(paths[:2]) and refused == {paths[2]: ("corrupt_image", "corrupt_image")}


def test_later_answers_are_retried_after_retry_after(tmp_path: Path, sleeps: list[float]) -> None:
    answers = [
        _problem(503, "too_many_uploads", **{"Retry-After": "5"}),
        _problem(429, "rate_limited", **{"Retry-After": "2"}),
        _problem(503, "too_many_uploads"),
        httpx.Response(201, json={"id": "x"}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    with DiffallClient("http://api.test", "k", transport=httpx.MockTransport(handler)) as client:
        ids, refused = batch_cli._upload_all(client, _files(tmp_path, "a.png"))
    assert list(ids.values()) == ["x"] and refused == {}
    assert sleeps == [5.0, 2.0, 1.125]  # Retry-After as a floor; else 0.5 x1.5 x1.5


def test_gives_up_after_max_attempts_and_raises_other_errors(sleeps: list[float]) -> None:
    calls: list[int] = []

    def busy() -> None:
        calls.append(1)
        raise DiffallError(status=503, code="too_many_uploads", detail="busy", retry_after_s=1)

    with pytest.raises(DiffallError) as info:
        batch_cli.with_retries(busy)
    assert info.value.code == "too_many_uploads" and len(calls) == batch_cli.MAX_ATTEMPTS
    assert len(sleeps) == batch_cli.MAX_ATTEMPTS - 1

    def unauthorized() -> None:
        calls.append(1)
        raise DiffallError(status=401, code="unauthorized", detail="no")

    calls.clear()
    with pytest.raises(DiffallError):
        batch_cli.with_retries(unauthorized)
    assert len(calls) == 1
