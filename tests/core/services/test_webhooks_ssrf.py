"""SSRF protection of webhook calls: the URL rules and pinned resolution
(``core.services.webhooks.guard``; the address rules are tested in tests/core/netguard, the
pinned POST in test_webhooks_pinned_post.py).

No traffic leaves the machine: forbidden URLs fail before connecting (a guard fails the test if a
connection is attempted), public literals are only validated, and every real request goes to a
receiver on loopback (allow-listed). Names are mapped by a fake ``socket.getaddrinfo`` that
refuses any name it does not know, so no DNS query is made either.
"""

from __future__ import annotations

import ipaddress
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.netguard.classify import forbidden_reason, parse_allowed_networks
from core.services.errors import InvalidRequest
from core.services.webhooks.guard import (
    DeliveryError,
    ForbiddenDestination,
    pinned_post,
    resolve_pinned,
    validate_webhook_url,
)
from tests.support.netfakes import LOOPBACK_ONLY, PUBLIC_V4, FakeDNS

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
