"""Conditional GET for the resources clients poll: strong ETags and ``If-None-Match`` (304).

An ETag is derived from a resource's *version key* (the few columns that change exactly when
its representation does, read without the rest of the row; see
``core.services.comparisons.ComparisonVersion`` and ``core.services.batches.BatchVersion``),
the public base URL (it is in every link) and :data:`REPRESENTATION_VERSION`, hashed. A poll
that sends the ETag it was given back in ``If-None-Match`` is answered ``304 Not Modified``
with no body when nothing changed: one narrow indexed read, no serialisation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Annotated, Any, Final

from fastapi import Header, Response

__all__ = [
    "CACHE_CONTROL",
    "ETAG_HEADERS",
    "NOT_MODIFIED_RESPONSE",
    "REPRESENTATION_VERSION",
    "IfNoneMatch",
    "make_etag",
    "matches",
    "not_modified",
    "set_validators",
]

#: Bumped whenever a polled resource's JSON changes shape, so a client's stored ETag of the
#: old shape never matches the new one.
REPRESENTATION_VERSION: Final = "1"
#: Caches may keep the answer for this client only and must revalidate it on every use.
CACHE_CONTROL: Final = "private, no-cache"
#: Longest ``If-None-Match`` value looked at, in characters (longer ones never match).
MAX_IF_NONE_MATCH: Final = 4096

IfNoneMatch = Annotated[
    str | None,
    Header(
        alias="If-None-Match",
        description="The `ETag` of the copy you hold: `304 Not Modified` (no body) if it is "
        "still current.",
    ),
]

#: OpenAPI ``headers`` of a 200 and a 304.
ETAG_HEADERS: Final[dict[str, Any]] = {
    "ETag": {
        "description": "Strong validator of this representation: send it back in "
        "`If-None-Match` to get a 304 while nothing changed.",
        "schema": {"type": "string"},
    },
    "Cache-Control": {"description": CACHE_CONTROL, "schema": {"type": "string"}},
}
#: OpenAPI entry of the 304 answer.
NOT_MODIFIED_RESPONSE: Final[dict[int | str, dict[str, Any]]] = {
    304: {
        "description": "Not Modified: the `If-None-Match` ETag is current; no body.",
        "headers": ETAG_HEADERS,
        "content": {},
    }
}


def make_etag(kind: str, base_url: str, parts: Iterable[object]) -> str:
    """A strong ETag (quoted, 32 hex digits) of a resource's version key.

    Parameters
    ----------
    kind
        The resource type (``comparison``, ``batch``, ``batch-page``).
    base_url
        ``settings.api.public_base_url`` (the representation's links depend on it).
    parts
        The version key: values whose ``str`` changes exactly when the representation does.
    """
    text = "\x1f".join([REPRESENTATION_VERSION, kind, base_url, *map(str, parts)])
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` value names ``etag`` (``*`` names any; weak comparison, as
    RFC 9110 requires for this header: a ``W/`` prefix is ignored)."""
    if not if_none_match or len(if_none_match) > MAX_IF_NONE_MATCH:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def set_validators(response: Response, etag: str) -> None:
    """Put the ETag and ``Cache-Control`` on a 200 answer."""
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = CACHE_CONTROL


def not_modified(etag: str, headers: dict[str, str] | None = None) -> Response:
    """The ``304 Not Modified`` answer (no body), with the ETag and any other ``headers``."""
    return Response(
        status_code=304,
        headers={"ETag": etag, "Cache-Control": CACHE_CONTROL, **(headers or {})},
    )
