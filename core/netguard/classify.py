"""Pure URL and IP rules of the outgoing-request guard: what a webhook URL may name.

:func:`parse_url` parses a URL strictly and normalises IP literals written in any encoding the C
library or a browser accepts (``http://2130706433/``, ``http://0x7f.1/``, ``http://0177.0.0.1/``,
``http://127.1/``, ``http://[::ffff:7f00:1]/`` ...); :func:`forbidden_reason` says why an address
is not publicly routable (loopback, private, link-local and cloud metadata, CGNAT, multicast,
broadcast, unspecified, reserved, documentation, benchmarking, IPv6 forms that embed such an IPv4
address, site-local, and anything :mod:`ipaddress` calls not global), unless it lies inside one of
the caller's ``allowed_networks`` (:func:`parse_allowed_networks` reads their text form).
:func:`check_url_offline` applies what can be decided without DNS. No I/O here: resolution is
:mod:`core.netguard.resolve`, the pinned connection :mod:`core.netguard.transport`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "MAX_URL_LENGTH",
    "IPAddress",
    "IPNetwork",
    "ParsedURL",
    "RefusedURL",
    "check_url_offline",
    "forbidden_reason",
    "is_localhost_name",
    "parse_allowed_networks",
    "parse_url",
    "refuse_address",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Longest URL accepted, in characters (also the length of the URL columns).
MAX_URL_LENGTH = 2048

_DEFAULT_PORTS = {"http": 80, "https": 443}


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

_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class RefusedURL(ValueError):
    """A URL is malformed or names a destination the rules refuse.

    Attributes
    ----------
    message : str
        A sentence for the caller (never the resolved address of a host name).
    reason : str
        Which rule refused it: ``length``, ``syntax``, ``scheme``, ``userinfo``, ``host``,
        ``port``, ``address`` (a forbidden IP address) or ``unresolvable`` (the name has no
        address, or resolution failed or timed out).
    details : dict
        ``{"reason": reason, ...}``; for IP literals ``details["address"]`` is the normalised
        address.
    allow_listable : bool
        True when an operator's allow-list (``allowed_networks``) could open the address.
    """

    def __init__(
        self, message: str, *, reason: str, allow_listable: bool = False, **details: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.details: dict[str, Any] = {"reason": reason, **details}
        self.allow_listable = allow_listable


def refuse_address(message: str, **details: Any) -> RefusedURL:
    """A refused address that the caller's allow-list could open (``reason`` ``address``)."""
    return RefusedURL(message, reason="address", allow_listable=True, **details)


# --------------------------------------------------------------------------------------------
# Address rules
# --------------------------------------------------------------------------------------------


def parse_allowed_networks(text: str) -> tuple[IPNetwork, ...]:
    """Parse an allow-list written as text: comma-separated CIDR networks (the form of
    ``DIFFALL_WEBHOOK_ALLOWED_NETWORKS``).

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
class ParsedURL:
    """A URL that passed the syntax rules (its addresses are not checked yet).

    Attributes
    ----------
    scheme : str
        ``"http"`` or ``"https"``.
    host : str
        A lower-case ASCII name without a trailing dot, or the canonical text of an IP literal
        (no brackets).
    lookup_name : str or None
        The name to resolve (as written, trailing dot kept), None for IP literals.
    literal : IPv4Address or IPv6Address or None
        The address of an IP literal.
    port : int
        1..65535 (80 or 443 when the URL gives none).
    path_and_query : str
        The request target (``"/"`` when empty), the fragment dropped.
    """

    scheme: str
    host: str
    lookup_name: str | None
    literal: IPAddress | None
    port: int
    path_and_query: str


def _forbid(message: str, reason: str, **details: Any) -> RefusedURL:
    return RefusedURL(message, reason=reason, **details)


def parse_url(url: str) -> ParsedURL:
    """Parse a URL by the syntax rules: http(s), printable ASCII, at most
    :data:`MAX_URL_LENGTH` characters, no user info, port 1..65535, a valid host.

    Raises
    ------
    RefusedURL
        ``reason`` ``length``, ``syntax``, ``scheme``, ``userinfo``, ``host``, ``port``, or
        ``address`` (an IPv6 literal with a zone identifier).
    """
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
        return ParsedURL(scheme, str(ip6), None, ip6, port, path_and_query)

    if not host:
        raise _forbid("The webhook URL has no host.", "host")
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        # WHATWG URL rule: a host whose last label is a number is an IPv4 address or invalid.
        ip4 = _parse_loose_ipv4(name)
        if ip4 is None:
            raise _forbid(f"The webhook URL's host {host!r} is not a valid IPv4 address.", "host")
        return ParsedURL(scheme, str(ip4), None, ip4, port, path_and_query)
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _forbid(f"The webhook URL's host {host!r} is not a valid host name.", "host")
    return ParsedURL(scheme, name, host, None, port, path_and_query)


def is_localhost_name(name: str) -> bool:
    """True for ``localhost`` and ``*.localhost`` (RFC 6761: loopback, never asked of DNS)."""
    return name == "localhost" or name.endswith(".localhost")


def check_url_offline(url: str, *, allowed_networks: Sequence[IPNetwork] = ()) -> str:
    """Check a webhook URL without resolving it: syntax, scheme, port, and the address rules
    for IP literals and ``localhost`` names. Returns the URL unchanged.

    For URLs given per comparison or per batch: refused at once when they can be judged
    without DNS; a host name is resolved and checked when the webhook is sent
    (:func:`core.netguard.transport.pinned_post`), so a name that later resolves to a private
    address is still refused.

    Raises
    ------
    RefusedURL
        As :func:`core.netguard.resolve.resolve_pinned`, for what can be decided without DNS.
    """
    parsed = parse_url(url)
    if parsed.literal is not None:
        candidates: list[str] = [str(parsed.literal)]
    elif is_localhost_name(parsed.host):
        candidates = ["127.0.0.1", "::1"]
    else:
        return url
    for address in candidates:
        reason = forbidden_reason(address, allowed_networks=allowed_networks)
        if reason is not None:
            raise refuse_address(
                f"Webhooks may not be sent to {parsed.host} ({reason}).", address=address
            )
    return url
