"""The pinned transport of the outgoing-request guard: POST over a connection to checked
addresses only.

:func:`pinned_post` resolves and checks the URL now, at send time
(:func:`core.netguard.resolve.resolve_pinned`), then the TCP connection goes to the addresses
that were checked, never to a second DNS answer (no DNS rebinding): a custom ``httpcore``
network backend substitutes the pinned address in ``connect_tcp``, while the URL, and so the
``Host`` header, TLS SNI and certificate verification, keep the original host name. Redirects are
never followed, environment proxies are ignored, and one deadline bounds the whole call (name
resolution, connect, TLS, write, read).
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from core.netguard.classify import IPNetwork, RefusedURL, forbidden_reason
from core.netguard.resolve import PinnedTarget, resolve_pinned

__all__ = [
    "DEFAULT_BODY_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "RESPONSE_BODY_LIMIT",
    "SEND_ERROR_CODES",
    "PostResult",
    "SendFailed",
    "pinned_post",
]

#: Default total timeout of one call (resolution + connect + TLS + write + read), seconds.
DEFAULT_TIMEOUT_S = 15.0
#: How many bytes of the response body :class:`PostResult` keeps.
RESPONSE_BODY_LIMIT = 1024
#: Default time to read the kept part of the body once the status arrived, seconds (within the
#: total timeout: the answer is known, a receiver trickling its body only delays the record).
DEFAULT_BODY_TIMEOUT_S = 2.0
#: The stable codes :class:`SendFailed` carries.
SEND_ERROR_CODES = ("timeout", "connection_error", "forbidden_destination", "tls_error")


class SendFailed(Exception):
    """A POST failed before an HTTP response arrived.

    Attributes
    ----------
    code : str
        One of :data:`SEND_ERROR_CODES`: ``timeout`` (the total timeout expired),
        ``connection_error`` (refused, reset, unresolvable name, malformed HTTP answer),
        ``forbidden_destination`` (the URL fails the rules at send time; retrying will not
        help) or ``tls_error`` (handshake or certificate verification failed).
    message : str
        A sentence for the log.
    duration_ms : int
        The time spent, in milliseconds.
    details : dict
        ``{"reason": ...}`` when the rules refused the URL, else empty.
    refusal : RefusedURL or None
        The refusal of the URL at send time, if that is what failed.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        duration_ms: int = 0,
        details: dict[str, Any] | None = None,
        refusal: RefusedURL | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.duration_ms = duration_ms
        self.details: dict[str, Any] = dict(details or {})
        self.refusal = refusal


@dataclass(frozen=True)
class PostResult:
    """What a receiver answered (any status: the caller decides what counts as success).

    Attributes
    ----------
    status_code : int
        HTTP status, 100..599. A 3xx is returned as is: redirects are never followed.
    headers : dict[str, str]
        Response headers, lower-case names, repeated headers joined with ``", "``
        (e.g. ``headers.get("retry-after")``, ``headers.get("location")``).
    body_text : str
        The first :data:`RESPONSE_BODY_LIMIT` (1024) bytes of the body, decoded as UTF-8 with
        replacement characters (shorter if the receiver stalled after sending the headers).
    duration_ms : int
        Milliseconds from the start of the call (including name resolution) to the end of
        reading ``body_text``.
    remote_address : str
        The checked IP address the connection went to.
    """

    status_code: int
    headers: dict[str, str]
    body_text: str
    duration_ms: int
    remote_address: str

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status_code < 300


class _Deadline:
    """One delivery's deadline (monotonic seconds), shared by its streams; it only moves earlier."""

    def __init__(self, at: float) -> None:
        self.at = at

    def shorten(self, at: float) -> None:
        """Move the deadline to ``at`` if that is earlier."""
        self.at = min(self.at, at)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation also ends by the delivery's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def _bound(self, timeout: float | None, exc: type[Exception]) -> float:
        remaining = self._deadline.at - time.monotonic()
        if remaining <= 0:
            raise exc("the total webhook timeout expired")
        return remaining if timeout is None else min(timeout, remaining)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._bound(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._bound(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = self._bound(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, bounded), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects only to the target's checked addresses, whatever host httpcore asks for."""

    def __init__(self, target: PinnedTarget, deadline: _Deadline) -> None:
        self._target = target
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()
        self.connected_address: str | None = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if host.strip("[]").lower() != self._target.host or port != self._target.port:
            raise httpcore.ConnectError(f"refusing to connect to unchecked origin {host}:{port}")
        addresses = self._target.addresses
        last: Exception = httpcore.ConnectError("no address to connect to")
        for i, address in enumerate(addresses):
            remaining = self._deadline.at - time.monotonic()
            if remaining <= 0:
                raise httpcore.ConnectTimeout("the total webhook timeout expired while connecting")
            share = remaining / (len(addresses) - i)
            try:
                stream = self._inner.connect_tcp(
                    address,
                    port,
                    timeout=share if timeout is None else min(timeout, share),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            self.connected_address = address
            return _DeadlineStream(stream, self._deadline)
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks never connect to unix sockets")


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class _PinnedTransport(httpx.BaseTransport):
    """An httpx transport on an httpcore pool whose network backend is pinned (HTTP/1.1)."""

    def __init__(self, backend: _PinnedBackend, ssl_context: ssl.SSLContext) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=1,
            max_keepalive_connections=0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """certifi's CAs, hostname checks on; built once (loading the bundle costs ~20 ms)."""
    return httpx.create_ssl_context()


def _is_tls_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError | ssl.CertificateError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _elapsed_ms(start: float) -> int:
    return round((time.monotonic() - start) * 1000)


def pinned_post(
    target_url: str | PinnedTarget,
    *,
    content: bytes,
    headers: Mapping[str, str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    allowed_networks: Sequence[IPNetwork] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> PostResult:
    """POST ``content`` to a webhook URL over a connection pinned to its checked addresses.

    Parameters
    ----------
    target_url : str or PinnedTarget
        The webhook URL (resolved and checked now, at send time: pass the URL, not an old
        :class:`PinnedTarget`, unless it was made for this very call). A target's addresses are
        checked against the rules and ``allowed_networks`` again.
    content : bytes
        The request body (the signed JSON payload).
    headers : mapping of str to str
        Request headers (``content-type``, ``webhook-id``, ``webhook-timestamp``,
        ``webhook-signature``, ``user-agent`` ...). ``Host``, ``Content-Length``,
        ``Transfer-Encoding`` and ``Connection`` are set here and may not be given.
    timeout_s : float
        Total limit, seconds (> 0; default 15): name resolution, connect, TLS handshake,
        sending, and reading the status, headers and first kilobyte of the body. Nothing of
        the call outlasts it, however slowly the receiver sends.
    body_timeout_s : float
        Time left to read the first kilobyte of the body once the headers arrived, seconds
        (> 0; default 2; never beyond ``timeout_s``). What arrived by then is kept.
    allowed_networks : sequence of IPv4Network | IPv6Network
        Networks reachable despite the SSRF rules (the operator's allow-list).
    ssl_context : ssl.SSLContext or None
        TLS settings; default: certificate verification against certifi's CAs, for the URL's
        host name (SNI and certificate both use the name, never the pinned IP).

    Returns
    -------
    PostResult
        Any HTTP answer, 3xx included (redirects are never followed).

    Raises
    ------
    SendFailed
        ``code`` ``timeout``, ``connection_error``, ``forbidden_destination`` or ``tls_error``.
    ValueError
        ``timeout_s`` is not positive, or a header that is set here was given.
    """
    if not timeout_s > 0 or not body_timeout_s > 0:
        raise ValueError(f"timeouts must be positive, got {timeout_s}, {body_timeout_s}")
    reserved = {"host", "content-length", "transfer-encoding", "connection"}
    given = {name.lower() for name in headers}
    if given & reserved:
        raise ValueError(f"headers may not set {sorted(given & reserved)}")

    start = time.monotonic()
    deadline = _Deadline(start + timeout_s)
    if isinstance(target_url, PinnedTarget):
        target = target_url
        for address in target.addresses:  # a hand-made target gets no way around the rules
            reason = forbidden_reason(address, allowed_networks=allowed_networks)
            if reason is not None:
                raise SendFailed(
                    "forbidden_destination",
                    f"Webhooks may not be sent to {address} ({reason}).",
                    details={"reason": "address"},
                )
    else:
        try:
            target = resolve_pinned(
                target_url,
                allowed_networks=allowed_networks,
                resolve_timeout_s=timeout_s,
            )
        except RefusedURL as exc:
            if exc.reason != "unresolvable":
                code = "forbidden_destination"
            else:  # a transient failure (worth retrying), or a resolver slower than the budget
                code = "timeout" if time.monotonic() >= deadline.at else "connection_error"
            raise SendFailed(
                code,
                exc.message,
                duration_ms=_elapsed_ms(start),
                details=exc.details,
                refusal=exc,
            ) from exc

    backend = _PinnedBackend(target, deadline)
    transport = _PinnedTransport(backend, ssl_context or _default_ssl_context())
    request_headers = {"accept": "*/*", "accept-encoding": "identity"}
    request_headers.update({name.lower(): value for name, value in headers.items()})
    try:
        with (
            httpx.Client(
                transport=transport,
                trust_env=False,
                follow_redirects=False,
                timeout=httpx.Timeout(timeout_s),
            ) as client,
            client.stream("POST", target.url, content=content, headers=request_headers) as resp,
        ):
            deadline.shorten(time.monotonic() + body_timeout_s)
            body = bytearray()
            try:
                for chunk in resp.iter_raw():
                    body += chunk
                    if len(body) >= RESPONSE_BODY_LIMIT:
                        break
            except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError):
                pass  # the status arrived: a stalled or broken body does not undo it
            return PostResult(
                status_code=resp.status_code,
                headers=dict(resp.headers),
                body_text=bytes(body[:RESPONSE_BODY_LIMIT]).decode("utf-8", errors="replace"),
                duration_ms=_elapsed_ms(start),
                remote_address=backend.connected_address or "",
            )
    except (httpcore.TimeoutException, httpx.TimeoutException) as exc:
        raise SendFailed(
            "timeout",
            f"No answer within {timeout_s:g} s ({type(exc).__name__}).",
            duration_ms=_elapsed_ms(start),
        ) from exc
    except (httpcore.ConnectError, httpx.ConnectError) as exc:
        code = "tls_error" if _is_tls_failure(exc) else "connection_error"
        raise SendFailed(
            code, f"Could not connect: {exc or type(exc).__name__}.", duration_ms=_elapsed_ms(start)
        ) from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpx.TransportError, OSError) as exc:
        code = "tls_error" if _is_tls_failure(exc) else "connection_error"
        raise SendFailed(
            code,
            f"The connection failed: {exc or type(exc).__name__}.",
            duration_ms=_elapsed_ms(start),
        ) from exc
