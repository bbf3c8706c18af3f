"""Run moto's S3 server in a thread on a free loopback port, for tests.

Usage::

    with running_s3_server() as server:
        store = S3ObjectStore(endpoint_url=server.endpoint_url, bucket="test-bucket", ...)

or ``server = start_s3_server()`` ... ``server.stop()`` (for a session-scoped fixture).
moto keeps its state per process, not per server: use unique bucket names (>= 3 characters), or
call :meth:`S3Server.reset` to wipe everything. Any credentials are accepted. Presigned PUTs
work when the uploader sends ``Content-Type: application/octet-stream`` (a form-encoded body is
swallowed by moto).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
from moto.server import ThreadedMotoServer

from tests.support.processes import free_port

__all__ = [
    "TEST_ACCESS_KEY_ID",
    "TEST_REGION",
    "TEST_SECRET_ACCESS_KEY",
    "S3Server",
    "free_port",
    "running_s3_server",
    "start_s3_server",
]

#: Credentials and region to use against the test server (moto accepts any).
TEST_ACCESS_KEY_ID = "testing"
TEST_SECRET_ACCESS_KEY = "testing"
TEST_REGION = "us-east-1"


@dataclass
class S3Server:
    """A running moto S3 server.

    Attributes
    ----------
    endpoint_url : str
        ``http://127.0.0.1:<port>``.
    """

    endpoint_url: str
    _server: ThreadedMotoServer = field(repr=False)

    @property
    def port(self) -> int:
        """The TCP port the server listens on (1..65535)."""
        return int(self.endpoint_url.rsplit(":", 1)[1])

    def reset(self) -> None:
        """Delete every bucket and object in this process's moto state."""
        httpx.post(f"{self.endpoint_url}/moto-api/reset", timeout=10.0).raise_for_status()

    def stop(self) -> None:
        """Shut the server down and wait for its thread to end."""
        self._server.stop()


def start_s3_server() -> S3Server:
    """Start moto's S3 server on 127.0.0.1 and a free port; return it once it accepts requests.

    Returns
    -------
    S3Server
        The running server; call :meth:`S3Server.stop` when done.
    """
    # werkzeug logs every request at INFO; keep test output readable.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return S3Server(endpoint_url=f"http://{host}:{port}", _server=server)


@contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """Run moto's S3 server for the duration of the ``with`` block.

    Yields
    ------
    S3Server
        The running server (stopped on exit).
    """
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()
