"""Helpers for the HTTP tests (tests/test_web.py, tests/web/): TLS material, raw sockets, the served app."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trustme
from prometheus_client import CollectorRegistry

from exporter.config import TLSServerConfig, WebConfig
from exporter.readiness import Readiness
from exporter.web import WebServer

LOCAL = "127.0.0.1:0"


def local(**fields: Any) -> WebConfig:
    """A validated config, then bound to 127.0.0.1 port 0 (the config model only accepts ports 1-65535)."""
    return WebConfig(**fields).model_copy(update={"listen_address": LOCAL})


def always_ready() -> Readiness:
    return Readiness(True, "ready")


def write_server_tls(tmp_path: Path, ca: trustme.CA) -> TLSServerConfig:
    """A server certificate for 127.0.0.1 signed by ``ca``; ``ca`` is also written to tmp_path/ca.crt."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "server.crt", tmp_path / "server.key"
    for blob in cert.cert_chain_pems:
        blob.write_to_path(cert_file, append=True)
    cert.private_key_pem.write_to_path(key_file)
    ca.cert_pem.write_to_path(tmp_path / "ca.crt")
    return TLSServerConfig(cert_file=cert_file, key_file=key_file)


def client_context(ca: trustme.CA, *, client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if client_cert:
        ca.issue_cert("scraper.example").configure_cert(context)
    return context


@dataclass(frozen=True)
class Served:
    server: WebServer
    base: str  # scheme://127.0.0.1:port of the main listener
    port: int


class Serve(Protocol):
    def __call__(
        self,
        web_config: WebConfig | None = None,
        *,
        readiness: Callable[[], Readiness] = always_ready,
        registry: CollectorRegistry | None = None,
    ) -> Awaitable[Served]: ...


def open_half_open(port: int, count: int, *, partial: bytes = b"GET /metrics HTT") -> list[socket.socket]:
    """``count`` connections that each send ``partial`` (an unfinished request line) and then nothing.
    A connection the server refuses or resets while opening is left out.  Blocking: against a server
    in this process, call it in a thread."""
    held: list[socket.socket] = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            continue
        held.append(sock)
        with contextlib.suppress(OSError):
            sock.sendall(partial)
    return held


@contextlib.contextmanager
def closing_all(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed (or reset) ``sock``; never blocks."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def wait_closed(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """Waits until the server closed every socket or ``timeout`` passed; returns those still open."""
    deadline = time.monotonic() + timeout
    remaining = list(socks)
    while remaining and time.monotonic() < deadline:
        remaining = [sock for sock in remaining if not closed_by_server(sock)]
        if remaining:
            time.sleep(0.05)
    return remaining


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Sends ``data`` on a fresh connection and returns everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before reading it all
            sock.sendall(data)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)
