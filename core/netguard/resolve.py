"""Name resolution of the outgoing-request guard: resolve a URL's host once, with a time limit,
and check every address it gives.

:func:`resolve_pinned` parses the URL (:func:`core.netguard.classify.parse_url`), resolves host
names with :func:`socket.getaddrinfo` in a thread bounded by a timeout, and refuses the URL if
ANY address is forbidden (:func:`core.netguard.classify.forbidden_reason`) and not inside the
caller's ``allowed_networks``. The :class:`PinnedTarget` it returns is what
:mod:`core.netguard.transport` connects to: the checked addresses, never a second DNS answer.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.netguard.classify import (
    IPNetwork,
    RefusedURL,
    forbidden_reason,
    is_localhost_name,
    parse_url,
    refuse_address,
)

__all__ = ["DEFAULT_RESOLVE_TIMEOUT_S", "PinnedTarget", "resolve_pinned", "validate_url"]

#: Default timeout of one name resolution, seconds.
DEFAULT_RESOLVE_TIMEOUT_S = 5.0


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
        raise RefusedURL(f"Resolving {name!r} timed out.", reason="unresolvable")
    if "error" in box:
        error = box["error"]
        if isinstance(error, OSError | UnicodeError):
            raise RefusedURL(f"The webhook host {name!r} does not resolve.", reason="unresolvable")
        raise error
    addresses: list[str] = []
    for family, _type, _proto, _canon, sockaddr in box["infos"]:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise RefusedURL(f"The webhook host {name!r} has no IP address.", reason="unresolvable")
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
        ``http://`` or ``https://`` URL, printable ASCII, at most ``MAX_URL_LENGTH`` (2048)
        characters, no user info, port 1..65535.
    allowed_networks : sequence of IPv4Network | IPv6Network
        Networks reachable despite the rules (the operator's allow-list).
    resolve_timeout_s : float
        Limit on name resolution, seconds (> 0).

    Returns
    -------
    PinnedTarget
        Every address of the host, each allowed. IP literals are not resolved; ``localhost``
        and ``*.localhost`` are never asked of DNS: they mean 127.0.0.1 and ::1 (RFC 6761).

    Raises
    ------
    RefusedURL
        The URL is malformed, its host does not resolve, or ANY of its addresses is forbidden.
    """
    parsed = parse_url(url)
    if parsed.literal is not None:
        reason = forbidden_reason(parsed.literal, allowed_networks=allowed_networks)
        if reason is not None:
            raise refuse_address(
                f"Webhooks may not be sent to {parsed.literal} ({reason}).",
                address=str(parsed.literal),
            )
        return PinnedTarget(
            parsed.scheme, parsed.host, parsed.port, parsed.path_and_query, [parsed.host]
        )

    assert parsed.lookup_name is not None
    if is_localhost_name(parsed.host):
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
            raise refuse_address(
                f"The webhook host {parsed.host!r} resolves to a forbidden address ({reason})."
            )
    return PinnedTarget(parsed.scheme, parsed.host, parsed.port, parsed.path_and_query, addresses)


def validate_url(
    url: str,
    *,
    allowed_networks: Sequence[IPNetwork] = (),
    resolve_timeout_s: float = DEFAULT_RESOLVE_TIMEOUT_S,
) -> None:
    """Check a URL when it is registered (see :func:`resolve_pinned` for the rules).

    Parameters
    ----------
    url : str
        The URL to check.
    allowed_networks : sequence of IPv4Network | IPv6Network
        Networks reachable despite the rules (the operator's allow-list).
    resolve_timeout_s : float
        Limit on name resolution, seconds (> 0).

    Raises
    ------
    RefusedURL
        ``reason`` (and ``details["reason"]``) names the rule.
    """
    resolve_pinned(url, allowed_networks=allowed_networks, resolve_timeout_s=resolve_timeout_s)
