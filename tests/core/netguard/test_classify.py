"""The address rules and the allow-list of ``core.netguard.classify`` (pure functions)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.netguard.classify import forbidden_reason, parse_allowed_networks


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
