"""Python client of the DiffALL HTTP API (v1), on httpx.

>>> from diffall.client import DiffallClient
>>> with DiffallClient("http://127.0.0.1:8000", "dfa_...") as client:   # doctest: +SKIP
...     comparison = client.compare("a.png", "b.png", metadata={"build": 42})
...     done = client.wait(comparison, timeout_s=60)
...     done["result"]["ssim"], done["result"]["verdict"]
...     open("heatmap.png", "wb").write(client.heatmap(done["id"]))

Images can be given as image ids (``str`` or :class:`uuid.UUID`), paths (``str`` or
:class:`os.PathLike`) or bytes; paths and bytes are uploaded first (``POST /v1/images``, stored
once by content, so uploading the same bytes again costs one request and returns the same id).
A ``str`` is taken as an image id when it is a UUID, as a path otherwise.

Every error answer of the API (``application/problem+json``) raises :class:`DiffallError` with the
problem's stable ``code``, the HTTP ``status`` and the ``detail``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from diffall.errors import DiffallError, DiffallTimeoutError, error_from, retry_after_s
from diffall.polling import (
    DEFAULT_MAX_POLL_S,
    POLL_JITTER,
    RETRY_STATUSES,
    Backoff,
    Conditional,
)

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_URL",
    "FINAL_STATES",
    "URL_ENV",
    "DiffallClient",
    "DiffallError",
    "DiffallTimeoutError",
    "ImageRef",
    "ResourceRef",
]

#: Environment variable naming the server's base URL (``DiffallClient.from_env``, ``--url``).
URL_ENV = "DIFFALL_URL"
#: Environment variable holding the API key (``DiffallClient.from_env``, ``--api-key``).
API_KEY_ENV = "DIFFALL_API_KEY"
#: Where ``diffall serve`` listens by default.
DEFAULT_URL = "http://127.0.0.1:8000"

#: Comparison states that never change again.
FINAL_STATES = frozenset({"succeeded", "failed", "canceled"})

#: An image: its id (UUID or str), a path to the file, or the file's bytes.
ImageRef = str | uuid.UUID | os.PathLike[str] | bytes | bytearray | memoryview

#: A comparison or a batch: the resource (a dict with its ``id``) or the id itself.
ResourceRef = str | uuid.UUID | Mapping[str, Any]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _as_image_id(ref: ImageRef) -> str | None:
    """The image id ``ref`` names, or None when it must be uploaded (path or bytes)."""
    if isinstance(ref, uuid.UUID):
        return str(ref)
    if isinstance(ref, str):
        try:
            return str(uuid.UUID(ref))
        except ValueError:
            return None
    return None


def _resource_id(ref: ResourceRef) -> str:
    """The id of a comparison or batch given as its resource (a dict) or its id."""
    if isinstance(ref, Mapping):
        if "id" not in ref:
            raise ValueError("the resource has no 'id'")
        return str(ref["id"])
    return str(ref)


def _query_value(value: Any) -> str:
    """Render one filter value for the query string."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class DiffallClient:
    """A synchronous client of the DiffALL API.

    Parameters
    ----------
    base_url
        Where the API is, e.g. ``http://127.0.0.1:8000`` (what ``diffall serve`` prints).
    api_key
        An API key (``Authorization: Bearer``), e.g. from ``diffall keys create``.
    timeout
        Seconds allowed for each HTTP request (connect, read, write); > 0.
    transport
        An httpx transport to send requests through instead of the network (tests).
    poll_jitter
        :meth:`wait` and :meth:`wait_batch` stretch each delay by a random share of up to this
        (>= 0; default :data:`~diffall.polling.POLL_JITTER`, 0: exact delays).

    Notes
    -----
    Use it as a context manager, or call :meth:`close`, to release its connections. Thread-safe
    in the way an ``httpx.Client`` is.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        poll_jitter: float = POLL_JITTER,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if poll_jitter < 0:
            raise ValueError(f"poll_jitter must be >= 0, got {poll_jitter}")
        self._poll_jitter = poll_jitter
        if not api_key:
            raise ValueError("api_key is empty")
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )
        # Redirect targets (presigned storage URLs) get no Authorization header.
        self._plain = httpx.Client(timeout=timeout, transport=transport, follow_redirects=True)

    @classmethod
    def from_env(
        cls,
        *,
        timeout: float = 30.0,
        environ: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> Self:
        """A client for the server named by the environment, as the ``diffall batch`` commands
        use it: :data:`URL_ENV` (default :data:`DEFAULT_URL`) and :data:`API_KEY_ENV`.

        Parameters
        ----------
        timeout
            Seconds allowed for each HTTP request (> 0).
        environ
            Where to read the variables (default ``os.environ``).
        transport
            As for the constructor (tests).

        Raises
        ------
        ValueError
            When :data:`API_KEY_ENV` is unset or empty.
        """
        env = os.environ if environ is None else environ
        key = env.get(API_KEY_ENV, "")
        if not key:
            raise ValueError(f"{API_KEY_ENV} is not set (an API key, e.g. from diffall serve)")
        url = env.get(URL_ENV) or DEFAULT_URL
        return cls(url, key, timeout=timeout, transport=transport)

    # -- plumbing --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections."""
        self._http.close()
        self._plain.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request to the API; raise :class:`DiffallError` for non-2xx/3xx answers."""
        headers = dict(kwargs.pop("headers", None) or {})
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TimeoutException as exc:
            raise DiffallError(status=0, code="timeout", detail=f"{method} {path}: {exc}") from exc
        except httpx.TransportError as exc:
            raise DiffallError(
                status=0, code="transport_error", detail=f"{method} {path}: {exc}"
            ) from exc
        if response.status_code >= 400:
            raise error_from(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """Send a request and return its JSON object body."""
        body = self._send(method, path, **kwargs).json()
        if not isinstance(body, dict):
            raise DiffallError(
                status=200, code="unexpected_response", detail=f"{method} {path}: not an object"
            )
        return body

    def _image_id(self, ref: ImageRef, uploaded: dict[Path | bytes, str] | None = None) -> str:
        """The id of ``ref``, uploading a path or bytes first (once per call via ``uploaded``)."""
        image_id = _as_image_id(ref)
        if image_id is not None:
            return image_id
        source: str | os.PathLike[str] | bytes
        cache_key: Path | bytes
        if isinstance(ref, bytes | bytearray | memoryview):
            source = cache_key = bytes(ref)
        elif isinstance(ref, uuid.UUID):  # pragma: no cover - _as_image_id returned its id
            raise AssertionError("unreachable")
        else:
            source, cache_key = ref, Path(ref).resolve()
        if uploaded is not None and cache_key in uploaded:
            return uploaded[cache_key]
        image_id = str(self.upload_image(source)["id"])
        if uploaded is not None:
            uploaded[cache_key] = image_id
        return image_id

    # -- images ----------------------------------------------------------------------------

    def upload_image(
        self, image: str | os.PathLike[str] | bytes | bytearray | memoryview
    ) -> dict[str, Any]:
        """Upload one image (``POST /v1/images``, multipart).

        Parameters
        ----------
        image
            A path to the file, or its bytes. The header is validated at once: an unsupported,
            corrupt or oversized file raises :class:`DiffallError` (e.g. ``unsupported_format``,
            ``image_too_large``) and nothing is stored.

        Returns
        -------
        dict
            The image resource: ``id``, ``sha256``, ``size_bytes``, ``format``, ``width``,
            ``height`` (px), ... The same bytes uploaded again return the same id.
        """
        if isinstance(image, bytes | bytearray | memoryview):
            data, name = bytes(image), "image"
        else:
            path = Path(image)
            data, name = path.read_bytes(), path.name
        files = {"file": (name, data, "application/octet-stream")}
        return self._json("POST", "/v1/images", files=files)

    def get_image(self, image_id: str | uuid.UUID) -> dict[str, Any]:
        """The image resource (``GET /v1/images/{id}``)."""
        return self._json("GET", f"/v1/images/{image_id}")

    # -- comparisons -----------------------------------------------------------------------

    def compare(
        self,
        a: ImageRef,
        b: ImageRef,
        *,
        options: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Queue a comparison of B against A (``POST /v1/comparisons``).

        Parameters
        ----------
        a, b
            Reference image A and candidate B: image ids, paths or bytes (uploaded first).
        options
            Engine options: ``mode`` (``auto`` | ``pixel`` | ``align``), ``ignore``
            (``[[x, y, w, h], ...]`` in A's pixels), ``tolerance`` (0..1 of the data range),
            ``fail_under`` (SSIM 0..1).
        metadata
            Your own JSON reference, echoed back on the comparison.
        webhook_url
            Where to deliver the outcome (stored with the comparison).
        idempotency_key
            Sent as ``Idempotency-Key``: retrying with the same key and body replays the first
            answer instead of queueing a second comparison.

        Returns
        -------
        dict
            The comparison resource, state ``queued``; poll it with :meth:`wait`.
        """
        uploaded: dict[Path | bytes, str] = {}
        body: dict[str, Any] = {"a": self._image_id(a, uploaded), "b": self._image_id(b, uploaded)}
        if options is not None:
            body["options"] = dict(options)
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if webhook_url is not None:
            body["webhook_url"] = webhook_url
        return self._json("POST", "/v1/comparisons", json=body, idempotency_key=idempotency_key)

    def get_comparison(self, comparison_id: str | uuid.UUID) -> dict[str, Any]:
        """The comparison resource (``GET /v1/comparisons/{id}``): state, result or error."""
        return self._json("GET", f"/v1/comparisons/{comparison_id}")

    def delete_comparison(self, comparison_id: str | uuid.UUID) -> dict[str, Any] | None:
        """Cancel a comparison not started yet, or delete a finished one's result and heatmap.

        Returns
        -------
        dict or None
            The updated comparison when the API returns it (None for an empty answer).
        """
        response = self._send("DELETE", f"/v1/comparisons/{comparison_id}")
        if not response.content:
            return None
        body = response.json()
        return body if isinstance(body, dict) else None

    def heatmap_legend(self, *, tolerance: float = 0.1, antialiasing: bool = True) -> str:
        """The heatmap's legend as SVG text: the colour scale with ``tolerance`` (a result's
        ``tolerance``, fraction in [0, 1)) marked, magenta for anti-aliased pixels, grey for
        pixels not compared."""
        response = self._send(
            "GET",
            "/v1/heatmap-legend.svg",
            params={"tolerance": tolerance, "antialiasing": str(antialiasing).lower()},
            headers={"Accept": "image/svg+xml"},
        )
        return response.text

    def heatmap(self, comparison_id: str | uuid.UUID) -> bytes:
        """The heatmap PNG of a succeeded comparison (on A's pixel grid).

        Follows the API's redirect to short-lived storage URLs (without sending the API key
        there), or reads the PNG the API streams itself.

        Returns
        -------
        bytes
            The PNG file.
        """
        path = f"/v1/comparisons/{comparison_id}/heatmap"
        response = self._send("GET", path, headers={"Accept": "image/png"})
        if response.status_code in _REDIRECTS:
            location = response.headers.get("location")
            if not location:
                raise DiffallError(
                    status=response.status_code,
                    code="unexpected_response",
                    detail=f"GET {path}: redirect without a Location",
                )
            target = str(response.url.join(location))
            try:
                response = self._plain.get(target)
            except httpx.TransportError as exc:
                raise DiffallError(
                    status=0, code="transport_error", detail=f"GET heatmap: {exc}"
                ) from exc
            if response.status_code >= 400:
                raise DiffallError(
                    status=response.status_code,
                    code="heatmap_unavailable",
                    detail=f"storage answered {response.status_code} for the heatmap",
                )
        return response.content

    def iter_comparisons(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every comparison matching ``filters``, newest first, following the cursors.

        Parameters
        ----------
        **filters
            Query parameters of ``GET /v1/comparisons``: ``state``, ``batch_id``,
            ``created_after``, ``created_before`` (datetimes are sent as ISO 8601), ``limit``
            (page size 1..100). None values are left out.

        Yields
        ------
        dict
            One comparison resource at a time; pages are fetched as needed.
        """
        params = {key: _query_value(value) for key, value in filters.items() if value is not None}
        yield from self._paginate("/v1/comparisons", params)

    def _paginate(self, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Follow ``next_cursor`` from page to page of a listing."""
        cursor: str | None = None
        while True:
            query = dict(params)
            if cursor is not None:
                query["cursor"] = cursor
            page = self._json("GET", path, params=query)
            yield from page.get("items", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # -- batches ---------------------------------------------------------------------------

    def create_batch(
        self,
        pairs: Sequence[tuple[ImageRef, ImageRef] | Mapping[str, Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Queue many comparisons in one request (``POST /v1/batches``).

        Parameters
        ----------
        pairs
            Each pair is ``(a, b)`` or a mapping ``{"a": ..., "b": ..., "options": {...},
            "metadata": {...}}``; ``a`` and ``b`` are image ids, paths or bytes (paths and bytes
            are uploaded first, each distinct file once).
        metadata
            Your own reference for the whole batch.
        webhook_url
            Where to deliver the batch's outcome.
        idempotency_key
            Sent as ``Idempotency-Key``.

        Returns
        -------
        dict
            The API's answer: the batch (``id``, counts) and one outcome per pair (a comparison
            id, or an error for a pair that was refused; the other pairs still run).
        """
        uploaded: dict[Path | bytes, str] = {}
        items: list[dict[str, Any]] = []
        for pair in pairs:
            if isinstance(pair, Mapping):
                item = dict(pair)
                item["a"] = self._image_id(item["a"], uploaded)
                item["b"] = self._image_id(item["b"], uploaded)
            else:
                a, b = pair
                item = {"a": self._image_id(a, uploaded), "b": self._image_id(b, uploaded)}
            items.append(item)
        body: dict[str, Any] = {"pairs": items}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if webhook_url is not None:
            body["webhook_url"] = webhook_url
        return self._json("POST", "/v1/batches", json=body, idempotency_key=idempotency_key)

    def get_batch(self, batch_id: str | uuid.UUID) -> dict[str, Any]:
        """The batch (``GET /v1/batches/{id}``): counts by state, progress, verdicts."""
        return self._json("GET", f"/v1/batches/{batch_id}")

    def iter_batch_comparisons(
        self, batch_id: str | uuid.UUID, **filters: Any
    ) -> Iterator[dict[str, Any]]:
        """Every comparison of a batch (``GET /v1/batches/{id}/comparisons``), all pages."""
        params = {key: _query_value(value) for key, value in filters.items() if value is not None}
        yield from self._paginate(f"/v1/batches/{batch_id}/comparisons", params)

    # -- waiting ---------------------------------------------------------------------------

    def wait(
        self,
        comparison: ResourceRef,
        *,
        timeout_s: float = 300.0,
        poll_s: float = 1.0,
        max_poll_s: float = DEFAULT_MAX_POLL_S,
    ) -> dict[str, Any]:
        """Poll a comparison until it is ``succeeded``, ``failed`` or ``canceled``.

        Parameters
        ----------
        comparison
            The comparison (the dict :meth:`compare` returned) or its id.
        timeout_s
            Give up after this many seconds (> 0).
        poll_s
            First delay between polls, in seconds (> 0); it grows 1.5x per poll that saw no
            change, up to ``max_poll_s``, and starts again when the state changes. The server's
            ``Retry-After`` is a floor (the API sends 1 s while the job runs). A 429 or 503 does
            not end the wait: it is retried after its ``Retry-After``.
        max_poll_s
            Longest delay between polls, in seconds (>= ``poll_s``).

        Returns
        -------
        dict
            The finished comparison (check ``state``: a ``failed`` one carries ``error``).

        Raises
        ------
        DiffallTimeoutError
            ``wait_timeout`` when ``timeout_s`` passed first (``.last``: the comparison as last
            seen).
        """
        comparison_id = _resource_id(comparison)
        return self._poll(
            f"/v1/comparisons/{comparison_id}",
            what=f"comparison {comparison_id}",
            finished=lambda body: body.get("state") in FINAL_STATES,
            mark=lambda body: body.get("state"),
            timeout_s=timeout_s,
            backoff=Backoff(poll_s, max_poll_s, jitter=self._poll_jitter),
        )

    def wait_batch(
        self,
        batch: ResourceRef,
        *,
        timeout_s: float = 3600.0,
        poll_s: float = 1.0,
        max_poll_s: float = DEFAULT_MAX_POLL_S,
        progress: bool | None = None,
    ) -> dict[str, Any]:
        """Poll a batch until every comparison of it is final (``completed_at`` set).

        Parameters
        ----------
        batch
            The batch (the dict :meth:`create_batch` returned) or its id.
        timeout_s
            Give up after this many seconds (> 0).
        poll_s, max_poll_s
            Delays between polls in seconds, as in :meth:`wait`: a poll that sees more
            comparisons finished starts again from ``poll_s``.
        progress
            Draw a progress bar on stderr (done/failed/total, rate, ETA): ``True`` always,
            ``False`` never, ``None`` (default) when stderr is a terminal.

        Returns
        -------
        dict
            The completed batch: ``total``, ``counts`` by state, ``verdicts``. Its comparisons
            (scores, errors): :meth:`iter_batch_comparisons`.

        Raises
        ------
        DiffallTimeoutError
            ``wait_timeout`` when ``timeout_s`` passed first (``.last``: the batch as last
            seen).
        """
        from diffall.progress import BatchProgress, batch_counts, should_show

        batch_id = _resource_id(batch)

        def run(show: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
            return self._poll(
                f"/v1/batches/{batch_id}",
                what=f"batch {batch_id}",
                finished=lambda body: body.get("completed_at") is not None,
                mark=lambda body: "{}/{} done".format(*batch_counts(body)[::2]),
                timeout_s=timeout_s,
                backoff=Backoff(poll_s, max_poll_s, jitter=self._poll_jitter),
                on_poll=show,
            )

        if not should_show(progress):
            return run(None)
        with BatchProgress(batch_id) as bar:
            return run(bar.update)

    def _poll(
        self,
        path: str,
        *,
        what: str,
        finished: Callable[[dict[str, Any]], bool],
        mark: Callable[[dict[str, Any]], object],
        timeout_s: float,
        backoff: Backoff,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """GET ``path`` until ``finished(body)``; the delays come from ``backoff`` (reset when
        ``mark(body)`` changes). Answers in :data:`~diffall.polling.RETRY_STATUSES`, and
        transport failures once the server has answered, are waited out, not raised."""
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] | None = None
        conditional = Conditional()  # If-None-Match: an unchanged resource answers 304
        while True:
            try:
                response = self._send("GET", path, headers=conditional.headers())
            except DiffallError as exc:
                answered_before = last is not None and exc.code in {"transport_error", "timeout"}
                if exc.status not in RETRY_STATUSES and not answered_before:
                    raise
                retry_after = exc.retry_after_s
            else:
                try:
                    body = conditional.body(response)
                except ValueError as exc:
                    raise DiffallError(
                        status=response.status_code,
                        code="unexpected_response",
                        detail=f"GET {path}: {exc}",
                    ) from exc
                if on_poll is not None:
                    on_poll(body)
                if finished(body):
                    return dict(body)
                if last is None or mark(body) != mark(last):
                    backoff.changed()
                last, retry_after = dict(body), retry_after_s(response)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = "the server never answered" if last is None else f"last seen {mark(last)}"
                raise DiffallTimeoutError(
                    f"{what} not finished after {timeout_s:g} s ({seen})", last=last or {}
                )
            time.sleep(min(backoff.next_delay(retry_after), remaining))

    # -- webhook deliveries ----------------------------------------------------------------

    def get_webhook_default_secret(self) -> dict[str, Any]:
        """The tenant's default signing secret (``GET /v1/webhooks/default-secret``): it signs
        deliveries to the ``webhook_url`` of a comparison or a batch. Created on first use.

        Returns
        -------
        dict
            ``secret`` (``whsec_...``), ``previous_secret_expires_at`` (after a rotation, until
            when the previous secret signs too), ``created_at``, ``rotated_at``.
        """
        return self._json("GET", "/v1/webhooks/default-secret")

    def rotate_webhook_default_secret(
        self, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Replace the default secret (``POST /v1/webhooks/default-secret/rotate``); the old one
        keeps signing, beside the new one, for 24 hours. Returns the new secret as
        :meth:`get_webhook_default_secret` does."""
        return self._json(
            "POST", "/v1/webhooks/default-secret/rotate", idempotency_key=idempotency_key
        )

    def iter_webhook_deliveries(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every webhook delivery of yours, newest first, following the cursors
        (``GET /v1/webhook-deliveries``): to your endpoints and to the ``webhook_url`` of a
        comparison or a batch (``endpoint_id`` None).

        Parameters
        ----------
        **filters
            ``target`` (``endpoint`` | ``ad_hoc``), ``subject_id`` (a comparison or batch id:
            the deliveries of events about it), ``event_type`` (e.g. ``batch.completed``),
            ``state`` (``pending``, ``sending``, ``succeeded``, ``failed``), ``limit`` (page
            size 1..100). None values are left out.

        Yields
        ------
        dict
            One delivery at a time: ``id``, ``webhook_id``, ``event_type``, ``subject_id``,
            ``endpoint_id``, ``url``, ``state``, ``attempt_count``, ``attempts``, ...
        """
        params = {key: _query_value(value) for key, value in filters.items() if value is not None}
        yield from self._paginate("/v1/webhook-deliveries", params)

    def get_webhook_delivery(self, delivery_id: str | uuid.UUID) -> dict[str, Any]:
        """One delivery with its attempts (``GET /v1/webhook-deliveries/{id}``)."""
        return self._json("GET", f"/v1/webhook-deliveries/{delivery_id}")

    def retry_webhook_delivery(
        self, delivery_id: str | uuid.UUID, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Send a delivery once more now, with its original ``webhook-id``
        (``POST /v1/webhook-deliveries/{id}/retry``).

        Raises :class:`DiffallError` ``delivery_in_progress`` (409) while it is being sent,
        ``webhook_disabled`` (409) when its endpoint is disabled, ``not_found`` (404).

        Returns
        -------
        dict
            The delivery, ``pending`` or already ``sending``.
        """
        return self._json(
            "POST",
            f"/v1/webhook-deliveries/{delivery_id}/retry",
            idempotency_key=idempotency_key,
        )

    def recover_webhook_deliveries(
        self,
        since: datetime,
        *,
        subject_id: str | uuid.UUID | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Send once more each ``failed`` ad-hoc delivery (to the ``webhook_url`` of a
        comparison or a batch) created at or after ``since``
        (``POST /v1/webhook-deliveries/recover``).

        Parameters
        ----------
        since
            An aware datetime (a naive one raises ValueError).
        subject_id
            Only the deliveries of events about this comparison or batch.
        idempotency_key
            Sent as ``Idempotency-Key``.

        Returns
        -------
        dict
            ``recovered`` (how many) and ``delivery_ids``.
        """
        if since.tzinfo is None or since.utcoffset() is None:
            raise ValueError("since needs a time zone (e.g. datetime.now(UTC))")
        params = {"since": _query_value(since)}
        if subject_id is not None:
            params["subject_id"] = str(subject_id)
        return self._json(
            "POST",
            "/v1/webhook-deliveries/recover",
            params=params,
            idempotency_key=idempotency_key,
        )
