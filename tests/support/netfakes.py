"""Network fakes for the tests of the SSRF guard and its pinned transport.

- :class:`FakeDNS` (fixture ``dns``): a ``socket.getaddrinfo`` that answers made-up names from a
  table and refuses any other name, so no DNS query leaves the machine (numeric hosts go to the C
  library, as they would for real).
- fixture ``no_connect``: fails the test if anything opens a connection through httpcore.
- :class:`RawReceiver` (fixture ``raw_receivers``): a real HTTP(S) server on a loopback address
  (IPv4 or IPv6) whose handler the test writes (to hang, redirect, trickle). Webhook tests that
  only need scripted replies use :class:`tests.support.receivers.Receiver` instead.
- :func:`make_pki` (fixture ``pki``): a throw-away CA and a server certificate for ``hook.test``.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.netguard.classify import parse_allowed_networks

__all__ = [
    "LOOPBACK_ONLY",
    "PKI",
    "PUBLIC_V4",
    "FakeDNS",
    "RawReceiver",
    "Seen",
    "answer",
    "dns",
    "make_pki",
    "no_connect",
    "pki",
    "raw_receivers",
]

#: A public address used only as a literal or a fake DNS answer (never connected to).
PUBLIC_V4 = "93.184.215.14"
#: Allowed networks that open 127.0.0.1 only.
LOOPBACK_ONLY = parse_allowed_networks("127.0.0.1/32")

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


class RawReceiver:
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
def raw_receivers() -> Iterator[Callable[..., RawReceiver]]:
    started: list[RawReceiver] = []

    def start(respond: Any = None, **kwargs: Any) -> RawReceiver:
        receiver = RawReceiver(respond or answer(200), **kwargs)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()


@dataclass
class PKI:
    ca_pem: bytes
    server: ssl.SSLContext
    sni: list[str | None]


def make_pki() -> PKI:
    """A CA and a ``hook.test`` server context that records the SNI names it is asked for."""
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


@pytest.fixture(scope="module")
def pki() -> PKI:
    """:func:`make_pki`, once per module."""
    return make_pki()
