"""SSRF protection for outgoing webhook calls: URL validation, pinned resolution, pinned POST.

A webhook URL is checked twice: when it is registered (:func:`validate_webhook_url`) and every
time a delivery is sent (:func:`pinned_post`, which calls :func:`resolve_pinned`). Both parse the
URL strictly, normalise IP literals written in any encoding the C library or a browser accepts
(``http://2130706433/``, ``http://0x7f.1/``, ``http://0177.0.0.1/``, ``http://127.1/``,
``http://[::ffff:7f00:1]/`` ...), resolve host names with :func:`socket.getaddrinfo` and refuse the
URL if ANY address is not publicly routable (loopback, private, link-local and cloud metadata,
CGNAT, multicast, broadcast, unspecified, reserved, documentation, benchmarking, IPv6 forms that
embed such an IPv4 address, site-local, and anything :mod:`ipaddress` calls not global), unless
the address lies inside one of the operator's ``allowed_networks``
(``DIFFALL_WEBHOOK_ALLOWED_NETWORKS``, parsed by :func:`parse_allowed_networks`).

At send time the TCP connection goes to the addresses that were checked, never to a second DNS
answer (no DNS rebinding): a custom ``httpcore`` network backend substitutes the pinned address
in ``connect_tcp``, while the URL, and so the ``Host`` header, TLS SNI and certificate
verification, keep the original host name. Redirects are never followed, environment proxies are
ignored, and one deadline bounds the whole call (name resolution, connect, TLS, write, read).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from core.services.errors import InvalidRequest, ServiceError

__all__ = [
    "DEFAULT_BODY_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "DELIVERY_ERROR_CODES",
    "MAX_URL_LENGTH",
    "RESPONSE_BODY_LIMIT",
    "DeliveryError",
    "ForbiddenDestination",
    "IPAddress",
    "IPNetwork",
    "PinnedTarget",
    "PostResult",
    "forbidden_reason",
    "parse_allowed_networks",
    "pinned_post",
    "resolve_pinned",
    "validate_webhook_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Longest webhook URL accepted, in characters.
MAX_URL_LENGTH = 2048
#: Default total timeout of one delivery (resolution + connect + TLS + write + read), seconds.
DEFAULT_TIMEOUT_S = 15.0
#: Default timeout of one name resolution, seconds.
DEFAULT_RESOLVE_TIMEOUT_S = 5.0
#: How many bytes of the response body :class:`PostResult` keeps.
RESPONSE_BODY_LIMIT = 1024
#: Default time to read the kept part of the body once the status arrived, seconds (within the
#: total timeout: the answer is known, a receiver trickling its body only delays the record).
DEFAULT_BODY_TIMEOUT_S = 2.0
#: The stable codes :class:`DeliveryError` carries.
DELIVERY_ERROR_CODES = ("timeout", "connection_error", "forbidden_destination", "tls_error")

_DEFAULT_PORTS = {"http": 80, "https": 443}
_USER_AGENT = "DiffALL-Webhooks/1"


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), label) for cidr, label in pairs)


# Checked in order; the first match names the reason. Anything ``ipaddress`` calls not global is
# refused as well (after these), so this list is about clear reasons and about ranges some Python
# versions still call global (e.g. 3.11 says fec0::/10, 64:ff9b::/96 and ::/96 are global).
_FORBIDDEN_V4 = _nets(
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("10.0.0.0/8", "private network"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private network"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private network"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)
_FORBIDDEN_V6 = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible IPv6 (deprecated)"),
    ("::ffff:0:0:0/96", "IPv4-translated IPv6"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments (incl. Teredo)"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "unique local (private network)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
#: The environment variable that opens networks the rules refuse (named in the 422's message).
ALLOWED_NETWORKS_SETTING = "DIFFALL_WEBHOOK_ALLOWED_NETWORKS"

_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class ForbiddenDestination(InvalidRequest):
    """A webhook URL is malformed or points somewhere a webhook may not go (HTTP 422).

    ``details["reason"]`` says which rule refused it: ``length``, ``syntax``, ``scheme``,
    ``userinfo``, ``host``, ``port``, ``address`` (a forbidden IP address; for IP literals
    ``details["address"]`` is the normalised address; ``details["setting"]`` names the
    allow-list setting that could open it) or ``unresolvable`` (the name has no
    address, or resolution failed or timed out).
    """

    code = "webhook_url_forbidden"

    def __init__(self, message: str, *, reason: str = "address", **details: Any) -> None:
        super().__init__(message, details={"reason": reason, **details})
        self.reason = reason


class DeliveryError(ServiceError):
    """A webhook POST failed before an HTTP response arrived.

    ``code`` is one of :data:`DELIVERY_ERROR_CODES`: ``timeout`` (the total timeout expired),
    ``connection_error`` (refused, reset, unresolvable name, malformed HTTP answer),
    ``forbidden_destination`` (the URL fails the SSRF rules at send time; retrying will not
    help) or ``tls_error`` (handshake or certificate verification failed). ``duration_ms`` is the
    time spent, in milliseconds.
    """

    code = "connection_error"

    def __init__(
        self,
        code: str,
        message: str,
        *,
        duration_ms: int = 0,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.duration_ms = duration_ms


@dataclass(frozen=True)
class PinnedTarget:
    """A checked webhook destination: where to connect and what to ask for.

    Attributes
    ----------
    scheme : str
        ``"http"`` or ``"https"``.
    host : str
        The host as sent in ``Host`` and TLS SNI: a lower-case ASCII name without a trailing
        dot, or the canonical text of an IP literal (no brackets, e.g. ``"127.0.0.1"`` for
        ``http://0x7f000001/``, ``"::1"`` for ``http://[::1]/``).
    port : int
        TCP port, 1..65535 (80 or 443 when the URL gives none).
    path_and_query : str
        The request target: the path (``"/"`` when empty) and ``?query`` as written (the
        fragment is dropped).
    addresses : list[str]
        Every address the host resolved to, each checked; connections go only to these, tried in
        order.
    """

    scheme: str
    host: str
    port: int
    path_and_query: str
    addresses: list[str] = field(default_factory=list)

    @property
    def host_is_ip(self) -> bool:
        """True when the URL's host is an IP literal (no name resolution involved)."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def url(self) -> str:
        """The canonical URL the request is made to (normalised host, explicit port)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path_and_query}"


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


# --------------------------------------------------------------------------------------------
# Address rules
# --------------------------------------------------------------------------------------------


def parse_allowed_networks(text: str) -> tuple[IPNetwork, ...]:
    """Parse ``DIFFALL_WEBHOOK_ALLOWED_NETWORKS``: comma-separated CIDR networks.

    Parameters
    ----------
    text : str
        E.g. ``"127.0.0.0/8, ::1/128, 10.20.0.0/16"``; blanks around items and empty items are
        ignored; a bare address means a single-address network (/32 or /128). ``""`` (the
        default) allows nothing beyond the public internet.

    Returns
    -------
    tuple of IPv4Network | IPv6Network
        In the order given.

    Raises
    ------
    ValueError
        An item is not a network, or has host bits set (``127.0.0.1/8``: write ``127.0.0.0/8``).
    """
    networks: list[IPNetwork] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise ValueError(
                f"webhook allowed network {item!r} is not a CIDR network: {exc}"
            ) from exc
    return tuple(networks)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 (well-known prefix) or 6to4 address reaches."""
    if ip in _IPV4_MAPPED:
        return ip.ipv4_mapped
    if ip in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR:
        return ip.sixtofour
    return None


def _in_networks(ip: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


def _plain(address: str | IPAddress) -> IPAddress:
    """Parse an address, dropping an IPv6 zone id (``fe80::1%eth0`` -> ``fe80::1``)."""
    if isinstance(address, str):
        address = ipaddress.ip_address(address.split("%", 1)[0])
    elif isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
    return address


def _rule_violation(ip: IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner = _rule_violation(embedded)
            if ip in _IPV4_MAPPED:
                return None if inner is None else f"IPv4-mapped IPv6 of {inner}"
            if inner is not None:
                kind = "NAT64" if ip in _NAT64_WELL_KNOWN else "6to4"
                return f"{kind} IPv6 of {inner}"
        table = _FORBIDDEN_V6
    else:
        table = _FORBIDDEN_V4
    for net, label in table:
        if ip in net:
            return label
    if not ip.is_global:
        return "not globally routable"
    return None


def forbidden_reason(
    address: str | IPAddress, *, allowed_networks: Sequence[IPNetwork] = ()
) -> str | None:
    """Why a webhook may not connect to ``address``, or None when it may.

    Parameters
    ----------
    address : str or IPv4Address or IPv6Address
        An IP address (an IPv6 zone id such as ``%eth0`` is ignored for the check).
    allowed_networks : sequence of IPv4Network | IPv6Network
        Networks allowed even when the rules forbid them. An IPv4-mapped IPv6 address is also
        allowed when its IPv4 address is.

    Returns
    -------
    str or None
        A short human label (``"loopback"``, ``"private network"``, ``"link-local (cloud
        metadata)"``, ``"IPv4-mapped IPv6 of loopback"`` ...) or None.

    Raises
    ------
    ValueError
        ``address`` is not an IP address.
    """
    ip = _plain(address)
    if _in_networks(ip, allowed_networks):
        return None
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    if mapped is not None and _in_networks(mapped, allowed_networks):
        return None
    return _rule_violation(ip)


# --------------------------------------------------------------------------------------------
# URL parsing
# --------------------------------------------------------------------------------------------


def _parse_ipv4_number(part: str) -> int | None:
    """One part of a loose IPv4 address as inet_aton / WHATWG read it (0x hex, 0 octal)."""
    if part[:2] == "0x":
        digits = part[2:]
        return int(digits, 16) if digits else 0
    if len(part) > 1 and part[0] == "0":
        return int(part, 8) if all(c in "01234567" for c in part) else None
    return int(part) if part.isdigit() else None


def _parse_loose_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Parse ``host`` the way inet_aton and browsers do: 1 to 4 parts, each decimal, hex (0x)
    or octal (leading 0), the last filling the remaining bytes. None when it is not one."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not 1 <= len(parts) <= 4 or any(not p for p in parts):
        return None
    numbers: list[int] = []
    for part in parts:
        number = _parse_ipv4_number(part)
        if number is None:
            return None
        numbers.append(number)
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


@dataclass(frozen=True)
class _ParsedURL:
    scheme: str
    host: str  # normalised (see PinnedTarget.host)
    lookup_name: str | None  # the name to resolve, None for IP literals
    literal: IPAddress | None
    port: int
    path_and_query: str


def _forbid(message: str, reason: str, **details: Any) -> ForbiddenDestination:
    return ForbiddenDestination(message, reason=reason, **details)


def _forbid_address(message: str, **details: Any) -> ForbiddenDestination:
    """A refused address that the operator's allow-list could open: the message says how."""
    hint = (
        f" An operator can allow a network with the setting {ALLOWED_NETWORKS_SETTING} "
        "(comma-separated CIDR networks, e.g. 127.0.0.0/8,::1/128 for a receiver on this host)."
    )
    return ForbiddenDestination(
        message + hint, reason="address", setting=ALLOWED_NETWORKS_SETTING, **details
    )


def _parse_url(url: str) -> _ParsedURL:
    if not isinstance(url, str):
        raise _forbid("The webhook URL must be a string.", "syntax")
    if len(url) > MAX_URL_LENGTH:
        raise _forbid(f"The webhook URL is longer than {MAX_URL_LENGTH} characters.", "length")
    if any(not 0x21 <= ord(c) <= 0x7E for c in url) or "\\" in url:
        raise _forbid(
            "The webhook URL may contain only printable ASCII characters, without spaces or "
            "backslashes (write internationalised names as xn-- and percent-encode the path).",
            "syntax",
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        reason = "port" if "port" in str(exc).lower() else "syntax"
        raise _forbid(f"The webhook URL is malformed: {exc}.", reason) from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _forbid("The webhook URL must start with http:// or https://.", "scheme")
    netloc = parts.netloc
    if not netloc:
        raise _forbid("The webhook URL has no host.", "host")
    if "@" in netloc:
        raise _forbid("The webhook URL may not contain a user name or password.", "userinfo")
    if port is None:
        if netloc.rsplit("]", 1)[-1].endswith(":"):
            raise _forbid("The webhook URL has an empty port.", "port")
        port = _DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise _forbid("The webhook URL's port must be between 1 and 65535.", "port")
    path_and_query = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not path_and_query.startswith("/"):
        raise _forbid("The webhook URL's path must start with '/'.", "syntax")

    host = parts.hostname or ""
    if netloc.startswith("["):
        text, _, zone = host.partition("%")
        try:
            ip6 = ipaddress.IPv6Address(text)
        except ValueError as exc:
            raise _forbid(f"The webhook URL's host is not an IPv6 address: {exc}.", "host") from exc
        if zone:
            # A zone names a local interface; such an address is never a public destination.
            raise _forbid(
                f"The webhook URL's IPv6 address {ip6} carries a zone identifier.",
                "address",
                address=str(ip6),
            )
        return _ParsedURL(scheme, str(ip6), None, ip6, port, path_and_query)

    if not host:
        raise _forbid("The webhook URL has no host.", "host")
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        # WHATWG URL rule: a host whose last label is a number is an IPv4 address or invalid.
        ip4 = _parse_loose_ipv4(name)
        if ip4 is None:
            raise _forbid(f"The webhook URL's host {host!r} is not a valid IPv4 address.", "host")
        return _ParsedURL(scheme, str(ip4), None, ip4, port, path_and_query)
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _forbid(f"The webhook URL's host {host!r} is not a valid host name.", "host")
    return _ParsedURL(scheme, name, host, None, port, path_and_query)


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


def _is_localhost_name(name: str) -> bool:
    return name == "localhost" or name.endswith(".localhost")


def _getaddrinfo(name: str, port: int, timeout_s: float) -> list[str]:
    """Addresses of ``name`` (deduplicated, in resolver order), bounded by ``timeout_s``.

    getaddrinfo has no timeout of its own: it runs in a daemon thread, abandoned on timeout.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["infos"] = socket.getaddrinfo(
                name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name="webhook-resolve", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise _forbid(f"Resolving {name!r} timed out.", "unresolvable")
    if "error" in box:
        error = box["error"]
        if isinstance(error, OSError | UnicodeError):
            raise _forbid(f"The webhook host {name!r} does not resolve.", "unresolvable")
        raise error
    addresses: list[str] = []
    for family, _type, _proto, _canon, sockaddr in box["infos"]:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise _forbid(f"The webhook host {name!r} has no IP address.", "unresolvable")
    return addresses


def resolve_pinned(
    url: str,
    *,
    allowed_networks: Sequence[IPNetwork] = (),
    resolve_timeout_s: float = DEFAULT_RESOLVE_TIMEOUT_S,
) -> PinnedTarget:
    """Parse, resolve and check a webhook URL; return the checked addresses to connect to.

    Parameters
    ----------
    url : str
        ``http://`` or ``https://`` URL, printable ASCII, at most 2048 characters, no user
        info, port 1..65535.
    allowed_networks : sequence of IPv4Network | IPv6Network
        Networks reachable despite the rules (``DIFFALL_WEBHOOK_ALLOWED_NETWORKS``).
    resolve_timeout_s : float
        Limit on name resolution, seconds (> 0).

    Returns
    -------
    PinnedTarget
        Every address of the host, each allowed. IP literals are not resolved; ``localhost``
        and ``*.localhost`` are never asked of DNS: they mean 127.0.0.1 and ::1 (RFC 6761).

    Raises
    ------
    ForbiddenDestination
        The URL is malformed, its host does not resolve, or ANY of its addresses is forbidden.
    """
    parsed = _parse_url(url)
    if parsed.literal is not None:
        reason = forbidden_reason(parsed.literal, allowed_networks=allowed_networks)
        if reason is not None:
            raise _forbid_address(
                f"Webhooks may not be sent to {parsed.literal} ({reason}).",
                address=str(parsed.literal),
            )
        return PinnedTarget(
            parsed.scheme, parsed.host, parsed.port, parsed.path_and_query, [parsed.host]
        )

    assert parsed.lookup_name is not None
    if _is_localhost_name(parsed.host):
        addresses = ["127.0.0.1", "::1"]
    else:
        addresses = _getaddrinfo(parsed.lookup_name, parsed.port, resolve_timeout_s)
    for address in addresses:
        try:
            reason = forbidden_reason(address, allowed_networks=allowed_networks)
        except ValueError:
            reason = "not an IP address"
        if reason is not None:
            # The address itself is not echoed: it would reveal internal DNS to the caller.
            raise _forbid_address(
                f"The webhook host {parsed.host!r} resolves to a forbidden address ({reason})."
            )
    return PinnedTarget(parsed.scheme, parsed.host, parsed.port, parsed.path_and_query, addresses)


def validate_webhook_url(
    url: str,
    *,
    allowed_networks: Sequence[IPNetwork] = (),
    resolve_timeout_s: float = DEFAULT_RESOLVE_TIMEOUT_S,
) -> None:
    """Check a webhook URL when it is registered (see :func:`resolve_pinned` for the rules).

    Parameters
    ----------
    url : str
        The URL to check.
    allowed_networks : sequence of IPv4Network | IPv6Network
        Networks reachable despite the rules (``DIFFALL_WEBHOOK_ALLOWED_NETWORKS``).
    resolve_timeout_s : float
        Limit on name resolution, seconds (> 0).

    Raises
    ------
    ForbiddenDestination
        ``code`` ``webhook_url_forbidden``; ``details["reason"]`` names the rule.
    """
    resolve_pinned(url, allowed_networks=allowed_networks, resolve_timeout_s=resolve_timeout_s)


def check_webhook_url_offline(url: str, *, allowed_networks: Sequence[IPNetwork] = ()) -> str:
    """Check a webhook URL without resolving it: syntax, scheme, port, and the address rules
    for IP literals and ``localhost`` names. Returns the URL unchanged.

    For URLs given per comparison or per batch: refused at once when they can be judged
    without DNS; a host name is resolved and checked when the webhook is sent
    (:func:`pinned_post`), so a name that later resolves to a private address is still refused.

    Raises
    ------
    ForbiddenDestination
        As :func:`validate_webhook_url`, for what can be decided without DNS.
    """
    parsed = _parse_url(url)
    if parsed.literal is not None:
        candidates: list[str] = [str(parsed.literal)]
    elif _is_localhost_name(parsed.host):
        candidates = ["127.0.0.1", "::1"]
    else:
        return url
    for address in candidates:
        reason = forbidden_reason(address, allowed_networks=allowed_networks)
        if reason is not None:
            raise _forbid_address(
                f"Webhooks may not be sent to {parsed.host} ({reason}).", address=address
            )
    return url


# --------------------------------------------------------------------------------------------
# Pinned transport
# --------------------------------------------------------------------------------------------


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
        Networks reachable despite the SSRF rules (``DIFFALL_WEBHOOK_ALLOWED_NETWORKS``).
    ssl_context : ssl.SSLContext or None
        TLS settings; default: certificate verification against certifi's CAs, for the URL's
        host name (SNI and certificate both use the name, never the pinned IP).

    Returns
    -------
    PostResult
        Any HTTP answer, 3xx included (redirects are never followed).

    Raises
    ------
    DeliveryError
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
                raise DeliveryError(
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
        except ForbiddenDestination as exc:
            if exc.reason != "unresolvable":
                code = "forbidden_destination"
            else:  # a transient failure (worth retrying), or a resolver slower than the budget
                code = "timeout" if time.monotonic() >= deadline.at else "connection_error"
            raise DeliveryError(
                code, exc.message, duration_ms=_elapsed_ms(start), details=exc.details
            ) from exc

    backend = _PinnedBackend(target, deadline)
    transport = _PinnedTransport(backend, ssl_context or _default_ssl_context())
    request_headers = {"user-agent": _USER_AGENT, "accept": "*/*", "accept-encoding": "identity"}
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
        raise DeliveryError(
            "timeout",
            f"No answer within {timeout_s:g} s ({type(exc).__name__}).",
            duration_ms=_elapsed_ms(start),
        ) from exc
    except (httpcore.ConnectError, httpx.ConnectError) as exc:
        code = "tls_error" if _is_tls_failure(exc) else "connection_error"
        raise DeliveryError(
            code, f"Could not connect: {exc or type(exc).__name__}.", duration_ms=_elapsed_ms(start)
        ) from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpx.TransportError, OSError) as exc:
        code = "tls_error" if _is_tls_failure(exc) else "connection_error"
        raise DeliveryError(
            code,
            f"The connection failed: {exc or type(exc).__name__}.",
            duration_ms=_elapsed_ms(start),
        ) from exc
