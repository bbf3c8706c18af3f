"""SSRF protection of webhook calls: URL rules, address rules, pinned resolution and pinned POST.

No traffic leaves the machine: forbidden URLs fail before connecting (a guard fails the test if a
connection is attempted), public literals are only validated, and every real request goes to a
receiver on loopback (allow-listed). Names are mapped by a fake ``socket.getaddrinfo`` that
refuses any name it does not know, so no DNS query is made either.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from core.netguard.classify import forbidden_reason, parse_allowed_networks
from core.netguard.resolve import PinnedTarget
from core.services.errors import InvalidRequest
from core.services.webhooks.guard import (
    DELIVERY_ERROR_CODES,
    DeliveryError,
    ForbiddenDestination,
    pinned_post,
    resolve_pinned,
    validate_webhook_url,
)

PUBLIC_V4 = "93.184.215.14"
LOOPBACK_ONLY = parse_allowed_networks("127.0.0.1/32")

# --------------------------------------------------------------------------------------------
# Fixtures: fake DNS, a guard against connections, loopback receivers
# --------------------------------------------------------------------------------------------

_real_getaddrinfo = socket.getaddrinfo


@dataclass
class FakeDNS:
    """Answers for made-up names; a list of answers is served one per call (the last repeats)."""

    names: dict[str, list[list[str]]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    slow: threading.Event = field(default_factory=threading.Event)

    def map(self, name: str, *answers: list[str]) -> None:
        self.names[name] = list(answers)

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            ipaddress.ip_address(name.split("%")[0])
        except ValueError:
            pass
        else:  # numeric: no DNS involved, let the C library parse it
            return _real_getaddrinfo(host, port, *args, **kwargs)
        self.calls.append(name)
        if name == "slow.test":
            self.slow.wait(10)
            raise socket.gaierror(socket.EAI_AGAIN, "slow")
        if name not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, f"fake DNS does not know {name}")
        answers = self.names[name]
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        infos: list[tuple[Any, ...]] = []
        for address in addresses:
            if ":" in address:
                infos.append(
                    (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port or 0), 0, 0))
                )
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0))))
        return infos


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDNS]:
    fake = FakeDNS()
    fake.map("loopback.test", ["127.0.0.1"])
    fake.map("127.0.0.1.nip.io", ["127.0.0.1"])
    fake.map("v6loopback.test", ["::1"])
    fake.map("mapped.test", ["::ffff:127.0.0.1"])
    fake.map("metadata.test", ["169.254.169.254"])
    fake.map("mixed.test", [PUBLIC_V4, "10.0.0.1"])
    fake.map("mixed6.test", ["2606:4700::1111", "fd00::1"])
    fake.map("public.test", [PUBLIC_V4, "2606:4700::1111"])
    fake.map("xn--bcher-kva.test", [PUBLIC_V4])
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    yield fake
    fake.slow.set()


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to open a connection through httpcore."""

    def refuse(self: Any, host: str, port: int, **kwargs: Any) -> Any:
        raise AssertionError(f"a connection to {host}:{port} was attempted")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", refuse)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A real HTTP server on loopback that records requests and answers per ``respond``."""

    def __init__(
        self,
        respond: Callable[[http.server.BaseHTTPRequestHandler, Seen], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.seen: list[Seen] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                seen = Seen(
                    "POST",
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                receiver.seen.append(seen)
                respond(self, seen)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.server = Server((host, port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer(status: int, body: bytes = b"ok", headers: dict[str, str] | None = None) -> Any:
    def respond(handler: http.server.BaseHTTPRequestHandler, seen: Seen) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return respond


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(respond: Any = None, **kwargs: Any) -> Receiver:
        receiver = Receiver(respond or answer(200), **kwargs)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()


# --------------------------------------------------------------------------------------------
# Forbidden and allowed URLs
# --------------------------------------------------------------------------------------------

FORBIDDEN_ADDRESS_URLS = [
    # plain literals
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/hook",
    "http://127.255.255.254/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "https://169.254.169.254/computeMetadata/v1/",
    "http://100.64.0.1/",
    "http://100.127.255.254/",
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://255.255.255.255/",
    "http://0.0.0.0/",
    "http://240.0.0.1/",
    "http://192.0.2.1/",
    "http://198.51.100.7/",
    "http://203.0.113.9/",
    "http://198.18.0.1/",
    "http://198.19.255.1/",
    "http://192.0.0.9/",
    # encodings of 127.0.0.1, 169.254.169.254 and 0.0.0.0
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0X7F000001/",
    "http://017700000001/",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://0x7f.1/",
    "http://127.1/",
    "http://127.0.1/",
    "http://127.000.000.001/",
    "http://127.0.0.1./",
    "http://2852039166/",
    "http://0xa9.0xfe.0xa9.0xfe/",
    "http://0/",
    # IPv6
    "http://[::1]/",
    "http://[::1]:8080/hook",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::127.0.0.1]/",
    "http://[::ffff:0:127.0.0.1]/",
    "http://[64:ff9b::127.0.0.1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[64:ff9b:1::1]/",
    "http://[2002:7f00:1::1]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://[2001::1]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fd00:ec2::254]/",
    "http://[fc00::1]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://[2001:db8::1]/",
    "http://[100::1]/",
    # names
    "http://localhost/",
    "http://localhost:8000/hook",
    "http://LOCALHOST./",
    "http://api.localhost/",
    "http://loopback.test/",
    "http://127.0.0.1.nip.io/",
    "http://v6loopback.test/",
    "http://mapped.test/",
    "http://metadata.test/",
    "http://mixed.test/",
    "http://mixed6.test/",
]

MALFORMED_URLS = [
    ("ftp://example.com/hook", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://example.com:70/_", "scheme"),
    ("javascript:alert(1)", "scheme"),
    ("//example.com/hook", "scheme"),
    ("example.com/hook", "scheme"),
    ("http:///hook", "host"),
    ("http://:80/hook", "host"),
    ("http://user:pass@example.com/", "userinfo"),
    ("http://example.com@127.0.0.1/", "userinfo"),
    ("http://@example.com/", "userinfo"),
    ("http://example.com:0/", "port"),
    ("http://example.com:65536/", "port"),
    ("http://example.com:99999/", "port"),
    ("http://example.com:/", "port"),
    ("http://example.com:http/", "port"),
    ("http://exa mple.com/", "syntax"),
    ("http://example.com\\@127.0.0.1/", "syntax"),
    ("http://example.com/\n", "syntax"),
    ("\thttp://127.0.0.1/", "syntax"),
    ("http://bücher.example/", "syntax"),
    ("http://[::1/", "syntax"),
    ("http://[v1.fe]/", "host"),
    ("http://1.2.3.999/", "host"),
    ("http://1.2.3.4.5/", "host"),
    ("http://example.123/", "host"),
    ("http://0x100000000/", "host"),
    ("http://exa_mple..com/", "host"),
    ("http://-example.com/", "host"),
    ("http://" + "a" * 64 + ".com/", "host"),
    ("https://example.com/" + "a" * 2048, "length"),
]


@pytest.mark.usefixtures("no_connect")
@pytest.mark.parametrize("url", FORBIDDEN_ADDRESS_URLS)
def test_forbidden_destinations_are_refused_at_registration_and_at_send(
    url: str, dns: FakeDNS
) -> None:
    with pytest.raises(ForbiddenDestination) as info:
        validate_webhook_url(url)
    assert info.value.code == "webhook_url_forbidden"
    assert info.value.details["reason"] == "address"
    assert isinstance(info.value, InvalidRequest)  # so the API answers 422

    with pytest.raises(DeliveryError) as sent:
        pinned_post(url, content=b"{}", headers={"content-type": "application/json"})
    assert sent.value.code == "forbidden_destination"


def test_the_forbidden_table_is_large() -> None:
    assert len(FORBIDDEN_ADDRESS_URLS) >= 30


@pytest.mark.usefixtures("no_connect")
@pytest.mark.parametrize(("url", "reason"), MALFORMED_URLS)
def test_malformed_urls_are_refused_with_their_reason(url: str, reason: str, dns: FakeDNS) -> None:
    with pytest.raises(ForbiddenDestination) as info:
        validate_webhook_url(url)
    assert info.value.details["reason"] == reason, info.value.message
    with pytest.raises(DeliveryError) as sent:
        pinned_post(url, content=b"{}", headers={})
    assert sent.value.code == "forbidden_destination"
    assert dns.calls == []


@pytest.mark.usefixtures("no_connect")
@pytest.mark.parametrize(
    ("url", "host", "port", "path", "lookup"),
    [
        (f"https://{PUBLIC_V4}/hook", PUBLIC_V4, 443, "/hook", None),
        (f"http://{PUBLIC_V4}:8080/a/b?x=1&y=%20#frag", PUBLIC_V4, 8080, "/a/b?x=1&y=%20", None),
        ("http://1572394766", PUBLIC_V4, 80, "/", None),  # decimal form of the same address
        ("http://0x5db8d70e/", PUBLIC_V4, 80, "/", None),
        ("HTTPS://8.8.8.8/", "8.8.8.8", 443, "/", None),
        ("https://[2606:4700:0:0::1111]/x", "2606:4700::1111", 443, "/x", None),
        (f"https://[::ffff:{PUBLIC_V4}]/", "::ffff:5db8:d70e", 443, "/", None),
        ("https://Public.Test/hook", "public.test", 443, "/hook", "public.test"),
        ("https://public.test.:8443/", "public.test", 8443, "/", "public.test."),
        ("https://xn--bcher-kva.test/", "xn--bcher-kva.test", 443, "/", "xn--bcher-kva.test"),
    ],
)
def test_allowed_destinations_resolve_to_checked_targets(
    url: str, host: str, port: int, path: str, lookup: str | None, dns: FakeDNS
) -> None:
    dns.map("public.test.", [PUBLIC_V4, "2606:4700::1111"])
    validate_webhook_url(url)
    target = resolve_pinned(url)
    assert (target.host, target.port, target.path_and_query) == (host, port, path)
    assert target.host_is_ip == (lookup is None)
    if lookup is None:
        assert target.addresses == [host]
        assert dns.calls == []
    else:
        assert target.addresses == [PUBLIC_V4, *([] if "bcher" in host else ["2606:4700::1111"])]
        assert dns.calls == [lookup, lookup]


def test_unresolvable_names_are_refused(dns: FakeDNS) -> None:
    with pytest.raises(ForbiddenDestination) as info:
        validate_webhook_url("https://nowhere.test/hook")
    assert info.value.details["reason"] == "unresolvable"


def test_a_hanging_resolver_is_abandoned(dns: FakeDNS) -> None:
    start = time.monotonic()
    with pytest.raises(ForbiddenDestination) as info:
        validate_webhook_url("https://slow.test/hook", resolve_timeout_s=0.2)
    assert info.value.details["reason"] == "unresolvable"
    with pytest.raises(DeliveryError) as sent:
        pinned_post("https://slow.test/hook", content=b"{}", headers={}, timeout_s=0.2)
    assert sent.value.code == "timeout"
    assert time.monotonic() - start < 2.0


def test_the_real_localhost_resolves_only_to_forbidden_addresses() -> None:
    # The system resolver (/etc/hosts), not our RFC 6761 shortcut: every answer is refused.
    infos = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    assert infos
    for *_, sockaddr in infos:
        assert forbidden_reason(str(sockaddr[0])) == "loopback"
    with pytest.raises(ForbiddenDestination):
        validate_webhook_url("http://localhost:8000/hook")


def test_resolved_addresses_are_not_echoed_but_literals_are(dns: FakeDNS) -> None:
    with pytest.raises(ForbiddenDestination) as named:
        validate_webhook_url("http://metadata.test/")
    assert "169.254" not in named.value.message
    assert "address" not in named.value.details
    with pytest.raises(ForbiddenDestination) as literal:
        validate_webhook_url("http://0xa9fea9fe/")
    assert literal.value.details["address"] == "169.254.169.254"
    assert "link-local" in literal.value.message


# --------------------------------------------------------------------------------------------
# Address rules and the allow-list
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("100.64.0.1", "shared address space (CGNAT)"),
        ("::ffff:10.1.2.3", "IPv4-mapped IPv6 of private network"),
        ("fe80::1%eth0", "link-local"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("2002:808:808::1", None),  # 6to4 of a public address
    ],
)
def test_forbidden_reason_names_the_rule(address: str, reason: str | None) -> None:
    assert forbidden_reason(address) == reason


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_ipv6_forms_embedding_an_ipv4_address_are_judged_like_it(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    verdict = forbidden_reason(v4) is None
    assert (forbidden_reason(ipaddress.IPv6Address(f"::ffff:{v4}")) is None) == verdict
    # 6to4 and NAT64 of a forbidden address are forbidden (of an allowed one: Python decides)
    if not verdict:
        assert forbidden_reason(ipaddress.IPv6Address((0x2002 << 112) | (value << 80)))
        assert forbidden_reason(ipaddress.IPv6Address(f"64:ff9b::{v4}"))
    # whatever ipaddress calls not global is forbidden
    if not v4.is_global:
        assert not verdict


def _loose_forms(value: int) -> list[str]:
    b = value.to_bytes(4, "big")
    return [
        str(value),
        hex(value),
        "0" + format(value, "o"),
        f"{b[0]}.{int.from_bytes(b[1:], 'big')}",
        f"{hex(b[0])}.{b[1]}.0{int.from_bytes(b[2:], 'big'):o}",
        ".".join(f"0{x:o}" for x in b),
        ".".join(hex(x) for x in b),
    ]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_numeric_hosts_are_read_like_the_c_library_reads_them(value: int) -> None:
    # Independent reference: glibc's inet_aton, which getaddrinfo uses for numeric hosts.
    everything = parse_allowed_networks("0.0.0.0/0")
    for form in _loose_forms(value):
        expected = str(ipaddress.IPv4Address(socket.inet_aton(form)))
        target = resolve_pinned(f"http://{form}/", allowed_networks=everything)
        assert target.host == expected == str(ipaddress.IPv4Address(value)), form


def test_parse_allowed_networks() -> None:
    assert parse_allowed_networks("") == ()
    assert parse_allowed_networks(" , ,") == ()
    assert parse_allowed_networks("127.0.0.0/8, ::1/128,10.20.0.1") == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("10.20.0.1/32"),
    )
    with pytest.raises(ValueError, match=r"127\.0\.0\.1/8"):
        parse_allowed_networks("127.0.0.1/8")
    with pytest.raises(ValueError, match="nope"):
        parse_allowed_networks("10.0.0.0/8,nope")


def test_the_allow_list_opens_exactly_its_networks(dns: FakeDNS) -> None:
    loopback = parse_allowed_networks("127.0.0.0/8")
    validate_webhook_url("http://127.0.0.1:8123/hook", allowed_networks=loopback)
    validate_webhook_url("http://127.1:8123/hook", allowed_networks=loopback)
    validate_webhook_url("http://loopback.test/", allowed_networks=loopback)
    validate_webhook_url("http://[::ffff:127.0.0.1]/", allowed_networks=loopback)
    with pytest.raises(ForbiddenDestination):
        validate_webhook_url("http://10.0.0.1/", allowed_networks=loopback)
    with pytest.raises(ForbiddenDestination):  # ::1 is not inside 127.0.0.0/8
        validate_webhook_url("http://localhost/", allowed_networks=loopback)
    validate_webhook_url(
        "http://localhost/", allowed_networks=parse_allowed_networks("127.0.0.0/8,::1/128")
    )
    with pytest.raises(ForbiddenDestination):  # every address must pass
        validate_webhook_url("http://mixed.test/", allowed_networks=loopback)
    validate_webhook_url(
        "http://mixed.test/", allowed_networks=parse_allowed_networks("10.0.0.0/8")
    )
    with pytest.raises(ForbiddenDestination):
        validate_webhook_url("http://127.0.0.2/", allowed_networks=LOOPBACK_ONLY)


# --------------------------------------------------------------------------------------------
# Pinned POST to real loopback receivers
# --------------------------------------------------------------------------------------------


def test_pinned_post_reaches_the_checked_address_with_the_original_host(
    dns: FakeDNS, receivers: Callable[..., Receiver]
) -> None:
    reply = b"x" * 3000
    receiver = receivers(answer(200, reply, {"retry-after": "7", "x-a": "b"}))
    dns.map("hook.test", ["127.0.0.1"])
    payload = b'{"type":"ping","data":{}}'
    result = pinned_post(
        f"http://hook.test:{receiver.port}/in/hook?tenant=1",
        content=payload,
        headers={"content-type": "application/json", "webhook-id": "msg_1"},
        timeout_s=5,
        allowed_networks=LOOPBACK_ONLY,
    )
    assert result.status_code == 200 and result.ok
    assert result.remote_address == "127.0.0.1"
    assert result.body_text == "x" * 1024
    assert result.headers["retry-after"] == "7" and result.headers["x-a"] == "b"
    assert 0 <= result.duration_ms < 5000
    [seen] = receiver.seen
    assert seen.path == "/in/hook?tenant=1"
    assert seen.headers["host"] == f"hook.test:{receiver.port}"
    assert seen.headers["webhook-id"] == "msg_1"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["accept-encoding"] == "identity"
    assert seen.body == payload
    assert dns.calls == ["hook.test"]


def test_pinned_post_to_an_allow_listed_literal(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(answer(204, b""))
    result = pinned_post(
        f"http://127.0.0.1:{receiver.port}/",
        content=b"{}",
        headers={},
        allowed_networks=LOOPBACK_ONLY,
    )
    assert result.status_code == 204 and result.body_text == ""
    assert receiver.seen[0].headers["host"] == f"127.0.0.1:{receiver.port}"


def test_pinned_post_to_an_allow_listed_ipv6_literal(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(host="::1")
    result = pinned_post(
        f"http://[0:0::1]:{receiver.port}/six",
        content=b"{}",
        headers={},
        allowed_networks=parse_allowed_networks("::1/128"),
    )
    assert result.status_code == 200 and result.remote_address == "::1"
    assert receiver.seen[0].headers["host"] == f"[::1]:{receiver.port}"  # normalised literal


def test_pinned_post_ignores_proxy_environment_variables(
    monkeypatch: pytest.MonkeyPatch, receivers: Callable[..., Receiver]
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    receiver = receivers()
    result = pinned_post(
        f"http://127.0.0.1:{receiver.port}/",
        content=b"{}",
        headers={},
        allowed_networks=LOOPBACK_ONLY,
    )
    assert result.status_code == 200 and len(receiver.seen) == 1


def test_redirects_are_not_followed(receivers: Callable[..., Receiver]) -> None:
    target = receivers()
    redirecting = receivers(
        answer(302, b"moved", {"location": f"http://127.0.0.1:{target.port}/elsewhere"})
    )
    result = pinned_post(
        f"http://127.0.0.1:{redirecting.port}/hook",
        content=b"{}",
        headers={},
        allowed_networks=LOOPBACK_ONLY,
    )
    assert result.status_code == 302 and not result.ok
    assert result.headers["location"].endswith("/elsewhere")
    assert len(redirecting.seen) == 1
    assert target.seen == []


def test_the_next_address_is_tried_when_one_refuses(
    dns: FakeDNS, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    dns.map("two.test", ["127.0.0.3", "127.0.0.1"])  # nothing listens on 127.0.0.3
    result = pinned_post(
        f"http://two.test:{receiver.port}/",
        content=b"{}",
        headers={},
        timeout_s=5,
        allowed_networks=parse_allowed_networks("127.0.0.0/8"),
    )
    assert result.remote_address == "127.0.0.1" and len(receiver.seen) == 1


def test_nothing_listening_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeliveryError) as info:
        pinned_post(
            f"http://127.0.0.1:{port}/", content=b"{}", headers={}, allowed_networks=LOOPBACK_ONLY
        )
    assert info.value.code == "connection_error"
    assert info.value.code in DELIVERY_ERROR_CODES


def test_a_hanging_receiver_times_out_within_the_timeout() -> None:
    # The kernel accepts the connection (backlog) but nobody ever reads or answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(DeliveryError) as info:
            pinned_post(
                f"http://127.0.0.1:{port}/",
                content=b"{}",
                headers={},
                timeout_s=0.8,
                allowed_networks=LOOPBACK_ONLY,
            )
        elapsed = time.monotonic() - start
    assert info.value.code == "timeout"
    assert 0.7 <= elapsed < 2.5
    assert 700 <= info.value.duration_ms < 2500


def test_the_timeout_is_total_not_per_read() -> None:
    # A receiver dribbling one byte every 0.1 s (6 s in all) never trips a per-read timeout of
    # 0.8 s; the total timeout must stop it.
    stop = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def dribble() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\n" + b"x-pad: " + b"y" * 40:
                    if stop.wait(0.1):
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        return

        thread = threading.Thread(target=dribble, daemon=True)
        thread.start()
        start = time.monotonic()
        try:
            with pytest.raises(DeliveryError) as info:
                pinned_post(
                    f"http://127.0.0.1:{port}/",
                    content=b"{}",
                    headers={},
                    timeout_s=0.8,
                    allowed_networks=LOOPBACK_ONLY,
                )
        finally:
            stop.set()
            thread.join(5)
    assert info.value.code == "timeout"
    assert time.monotonic() - start < 2.5


def test_dns_rebinding_connects_to_the_checked_address_only(
    dns: FakeDNS, receivers: Callable[..., Receiver]
) -> None:
    good = receivers()
    evil = receivers(host="127.0.0.2", port=good.port)  # same port, another loopback address
    dns.map("rebind.test", ["127.0.0.1"], ["127.0.0.2"])  # first answer checked, then rebinds
    result = pinned_post(
        f"http://rebind.test:{good.port}/",
        content=b"{}",
        headers={},
        allowed_networks=LOOPBACK_ONLY,
    )
    assert result.status_code == 200 and result.remote_address == "127.0.0.1"
    assert len(good.seen) == 1 and evil.seen == []
    assert dns.calls == ["rebind.test"]
    # a second lookup would now answer 127.0.0.2, which the allow-list does not open
    with pytest.raises(DeliveryError) as info:
        pinned_post(
            f"http://rebind.test:{good.port}/",
            content=b"{}",
            headers={},
            allowed_networks=LOOPBACK_ONLY,
        )
    assert info.value.code == "forbidden_destination" and evil.seen == []


def test_dns_rebinding_from_a_public_to_a_loopback_answer(
    dns: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    # First answer public (checked, allowed), every later one 127.0.0.1. No traffic is sent:
    # the network backend records where it is asked to connect and refuses.
    dns.map("flip.test", [PUBLIC_V4], ["127.0.0.1"])
    connects: list[tuple[str, int]] = []

    def record(self: Any, host: str, port: int, **kwargs: Any) -> Any:
        connects.append((host, port))
        raise httpcore.ConnectError("recorded, not connected")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", record)
    target = resolve_pinned("https://flip.test/hook")
    assert target.addresses == [PUBLIC_V4]
    with pytest.raises(DeliveryError) as info:
        pinned_post(target, content=b"{}", headers={})
    assert info.value.code == "connection_error"
    assert connects == [(PUBLIC_V4, 443)]
    assert dns.calls == ["flip.test"]


@pytest.mark.usefixtures("no_connect")
def test_a_hand_made_target_cannot_bypass_the_rules() -> None:
    target = PinnedTarget("https", "hook.example", 443, "/", [PUBLIC_V4, "169.254.169.254"])
    with pytest.raises(DeliveryError) as info:
        pinned_post(target, content=b"{}", headers={})
    assert info.value.code == "forbidden_destination"


def test_pinned_post_rejects_headers_it_owns_and_bad_timeouts() -> None:
    target = PinnedTarget("http", "127.0.0.1", 9, "/", ["127.0.0.1"])
    with pytest.raises(ValueError, match="host"):
        pinned_post(target, content=b"", headers={"Host": "evil.test"})
    with pytest.raises(ValueError, match="timeout"):
        pinned_post(target, content=b"", headers={}, timeout_s=0)


# --------------------------------------------------------------------------------------------
# TLS: SNI and certificate verification use the URL's name while the socket goes to the pin
# --------------------------------------------------------------------------------------------


@dataclass
class PKI:
    ca_pem: bytes
    server: ssl.SSLContext
    sni: list[str | None]


@pytest.fixture(scope="module")
def pki() -> PKI:
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test CA"))
        .issuer_name(name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("hook.test"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hook.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert_file, key_file)
    sni: list[str | None] = []
    server.sni_callback = lambda sock, server_name, ctx: sni.append(server_name)
    return PKI(ca.public_bytes(serialization.Encoding.PEM), server, sni)


def test_tls_uses_the_url_name_for_sni_and_certificate_checks(
    pki: PKI, dns: FakeDNS, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(tls=pki.server)
    dns.map("hook.test", ["127.0.0.1"])
    dns.map("other.test", ["127.0.0.1"])
    trust = ssl.create_default_context(cadata=pki.ca_pem.decode())
    pki.sni.clear()
    result = pinned_post(
        f"https://hook.test:{receiver.port}/tls",
        content=b"{}",
        headers={},
        timeout_s=5,
        allowed_networks=LOOPBACK_ONLY,
        ssl_context=trust,
    )
    assert result.status_code == 200 and result.remote_address == "127.0.0.1"
    assert pki.sni == ["hook.test"]
    assert receiver.seen[0].headers["host"] == f"hook.test:{receiver.port}"

    # The certificate names hook.test: another name pinned to the same address must fail.
    with pytest.raises(DeliveryError) as mismatch:
        pinned_post(
            f"https://other.test:{receiver.port}/tls",
            content=b"{}",
            headers={},
            timeout_s=5,
            allowed_networks=LOOPBACK_ONLY,
            ssl_context=trust,
        )
    assert mismatch.value.code == "tls_error"
    # The default context (certifi's CAs) does not trust the test CA.
    with pytest.raises(DeliveryError) as untrusted:
        pinned_post(
            f"https://hook.test:{receiver.port}/tls",
            content=b"{}",
            headers={},
            timeout_s=5,
            allowed_networks=LOOPBACK_ONLY,
        )
    assert untrusted.value.code == "tls_error"
    assert len(receiver.seen) == 1
