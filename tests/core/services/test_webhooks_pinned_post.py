"""The pinned POST of webhook calls (``core.services.webhooks.guard.pinned_post``): the socket
goes to the address that was checked, with the URL's name in Host, SNI and certificate checks;
no redirects, no proxies, a total timeout.

Every request goes to a real receiver on loopback (allow-listed); names are mapped by a fake
``socket.getaddrinfo`` (tests/support/netfakes.py), so no DNS query is made.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import httpcore
import pytest

from core.netguard.classify import parse_allowed_networks
from core.netguard.resolve import PinnedTarget
from core.services.webhooks.guard import (
    DELIVERY_ERROR_CODES,
    DeliveryError,
    pinned_post,
    resolve_pinned,
)
from tests.support.netfakes import LOOPBACK_ONLY, PKI, PUBLIC_V4, FakeDNS, RawReceiver, answer


def test_pinned_post_reaches_the_checked_address_with_the_original_host(
    dns: FakeDNS, raw_receivers: Callable[..., RawReceiver]
) -> None:
    reply = b"x" * 3000
    receiver = raw_receivers(answer(200, reply, {"retry-after": "7", "x-a": "b"}))
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


def test_pinned_post_to_an_allow_listed_literal(raw_receivers: Callable[..., RawReceiver]) -> None:
    receiver = raw_receivers(answer(204, b""))
    result = pinned_post(
        f"http://127.0.0.1:{receiver.port}/",
        content=b"{}",
        headers={},
        allowed_networks=LOOPBACK_ONLY,
    )
    assert result.status_code == 204 and result.body_text == ""
    assert receiver.seen[0].headers["host"] == f"127.0.0.1:{receiver.port}"


def test_pinned_post_to_an_allow_listed_ipv6_literal(
    raw_receivers: Callable[..., RawReceiver],
) -> None:
    receiver = raw_receivers(host="::1")
    result = pinned_post(
        f"http://[0:0::1]:{receiver.port}/six",
        content=b"{}",
        headers={},
        allowed_networks=parse_allowed_networks("::1/128"),
    )
    assert result.status_code == 200 and result.remote_address == "::1"
    assert receiver.seen[0].headers["host"] == f"[::1]:{receiver.port}"  # normalised literal


def test_pinned_post_ignores_proxy_environment_variables(
    monkeypatch: pytest.MonkeyPatch, raw_receivers: Callable[..., RawReceiver]
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    receiver = raw_receivers()
    result = pinned_post(
        f"http://127.0.0.1:{receiver.port}/",
        content=b"{}",
        headers={},
        allowed_networks=LOOPBACK_ONLY,
    )
    assert result.status_code == 200 and len(receiver.seen) == 1


def test_redirects_are_not_followed(raw_receivers: Callable[..., RawReceiver]) -> None:
    target = raw_receivers()
    redirecting = raw_receivers(
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
    dns: FakeDNS, raw_receivers: Callable[..., RawReceiver]
) -> None:
    receiver = raw_receivers()
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
    dns: FakeDNS, raw_receivers: Callable[..., RawReceiver]
) -> None:
    good = raw_receivers()
    evil = raw_receivers(host="127.0.0.2", port=good.port)  # same port, another loopback address
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


def test_tls_uses_the_url_name_for_sni_and_certificate_checks(
    pki: PKI, dns: FakeDNS, raw_receivers: Callable[..., RawReceiver]
) -> None:
    receiver = raw_receivers(tls=pki.server)
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
