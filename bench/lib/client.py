"""Talking to the service under benchmark: uploads, the final states, figures for the tables."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

__all__ = ["FINAL", "fmt", "upload_pairs"]

#: Comparison states that end a job.
FINAL = ("succeeded", "failed", "canceled")


def upload_pairs(http: httpx.Client, pngs: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Upload every image once (``POST /v1/images``); return the ids of each pair."""
    ids: list[tuple[str, str]] = []
    for a, b in pngs:
        pair = []
        for data in (a, b):
            response = http.post(
                "/v1/images", files={"file": ("image.png", data, "application/octet-stream")}
            )
            if response.status_code >= 300:
                raise RuntimeError(f"upload failed: {response.status_code} {response.text}")
            pair.append(str(response.json()["id"]))
        ids.append((pair[0], pair[1]))
    return ids


def fmt(value: float | None, digits: int = 2) -> str:
    """``value`` with thousands separators and ``digits`` decimals; "-" for None."""
    return "-" if value is None else f"{value:,.{digits}f}"
