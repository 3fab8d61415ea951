"""Slow and half-open clients: header/idle deadlines and the connection cap keep the server answering."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import trustme
from processes import daemon_env, free_port, http_get, start, wait_until_up
from prometheus_client import CollectorRegistry
from support import SMALL, parse_exposition, sample
from web_support import Serve, closing_all, local, open_half_open, wait_closed, write_server_tls

from exporter.readiness import Readiness
from exporter.web import bound_port, build_app, start_server

SCRAPE_TIMEOUT = aiohttp.ClientTimeout(total=1)


async def scrape_status(url: str) -> int:
    async with aiohttp.ClientSession(timeout=SCRAPE_TIMEOUT) as client, client.get(url) as response:
        await response.read()
        return response.status


async def test_half_open_connections_are_closed_after_the_header_timeout(serve: Serve) -> None:
    served = await serve(local(header_timeout="300ms", max_connections=500))
    socks = await asyncio.to_thread(open_half_open, served.port, 200)
    with closing_all(socks):
        assert len(socks) == 200
        opened = time.monotonic()
        still_open = await asyncio.to_thread(wait_closed, socks, 5.0)
        closed_after = time.monotonic() - opened
    assert still_open == []
    assert closed_after < 3.0  # 300 ms deadlines, checked on a busy machine
    text = await _metrics_text(served.base)
    assert sample(text, "state_exporter_http_connections_dropped_total", reason="header_timeout") == 200
    assert sample(text, "state_exporter_http_connections_dropped_total", reason="connection_limit") == 0


async def test_a_stalled_tls_handshake_is_cut_at_the_header_timeout(serve: Serve, tmp_path: Path) -> None:
    """TLS runs before the app sees the connection: a client that connects and never says hello is
    bounded by the same deadline (asyncio's default would be 60 s)."""
    served = await serve(local(header_timeout="300ms", tls_server_config=write_server_tls(tmp_path, trustme.CA())))
    socks = await asyncio.to_thread(open_half_open, served.port, 20, partial=b"")
    with closing_all(socks):
        assert await asyncio.to_thread(wait_closed, socks, 5.0) == []


async def test_a_request_dripped_byte_by_byte_is_cut_at_the_header_timeout(serve: Serve) -> None:
    served = await serve(local(header_timeout="400ms"))

    def drip() -> float:
        """Sends one byte of a never-ending header every 50 ms; returns when the server closed."""
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            try:
                for _ in range(200):  # 10 s at most
                    sock.sendall(b"X")
                    time.sleep(0.05)
            except OSError:
                return time.monotonic() - started
        return float("inf")

    assert await asyncio.to_thread(drip) < 3.0  # each byte arrives in time, the headers never do


async def test_keep_alive_requests_and_the_idle_timeout(serve: Serve) -> None:
    """A connection used for one request after another is not cut by the header deadline (which applies
    per request), and an idle keep-alive connection is closed after web.idle_timeout."""
    served = await serve(local(header_timeout="300ms", idle_timeout="1s"))

    def exchange() -> tuple[list[bytes], bool]:
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
            answers = []
            for _ in range(4):  # 4 x 200 ms: longer than one header timeout
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answers.append(sock.recv(65536).split(b"\r\n", 1)[0])
                time.sleep(0.2)
            return answers, wait_closed([sock], 4.0) == []

    answers, closed_when_idle = await asyncio.to_thread(exchange)
    assert answers == [b"HTTP/1.1 200 OK"] * 4
    assert closed_when_idle


async def test_hundreds_of_half_open_connections_do_not_block_metrics(serve: Serve) -> None:
    """Past web.max_connections the oldest waiting connections are closed, so a scrape gets in at once
    even while the half-open ones are held (the header timeout here is long: the cap does it)."""
    served = await serve(local(header_timeout="60s", max_connections=50))
    socks = await asyncio.to_thread(open_half_open, served.port, 400)
    with closing_all(socks):
        started = time.monotonic()
        assert await scrape_status(f"{served.base}/metrics") == 200
        assert await scrape_status(f"{served.base}/readyz") == 200
        assert time.monotonic() - started < 2.0
        text = await _metrics_text(served.base)
        assert sample(text, "state_exporter_http_open_connections") <= 50
        assert sample(text, "state_exporter_http_connections_dropped_total", reason="connection_limit") >= 350


async def test_when_every_connection_is_busy_a_new_one_is_refused(serve: Serve) -> None:
    """Connections handling a request are never closed to make room: the newcomer is refused."""
    release = threading.Event()

    def blocked() -> Readiness:
        release.wait(10)
        return Readiness(True, "ready")

    served = await serve(local(max_connections=2), readiness=blocked)

    def scenario() -> tuple[list[bytes], bool]:
        busy = [socket.create_connection(("127.0.0.1", served.port), timeout=5) for _ in range(2)]
        with closing_all(busy):
            for sock in busy:
                sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.3)  # both requests reach the (blocked) readiness check
            with socket.create_connection(("127.0.0.1", served.port), timeout=5) as newcomer:
                refused = wait_closed([newcomer], 3.0) == []
            release.set()
            return [sock.recv(65536).split(b"\r\n", 1)[0] for sock in busy], refused

    try:
        answers, refused = await asyncio.to_thread(scenario)
    finally:
        release.set()
    assert answers == [b"HTTP/1.1 200 OK"] * 2
    assert refused
    text = await _metrics_text(served.base)
    assert sample(text, "state_exporter_http_connections_dropped_total", reason="connection_limit") == 1


async def _metrics_text(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with aiohttp.ClientSession() as client, client.get(f"{base}/metrics") as response:
        assert response.status == 200
        return parse_exposition(await response.text())


def test_daemon_keeps_serving_under_a_half_open_flood(fixture_copy: Callable[[str], Path], tmp_path: Path) -> None:
    """The issue's scenario scaled to a 256-descriptor limit: 400 half-open connections used to exhaust
    the daemon's descriptors (accept and the refresh failed with EMFILE, scrapes timed out).  50
    connections, a 50-connection accept batch and the daemon's own files fit in 256."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "metrics:\n  refresh_interval: 1s\n  counts_interval: 1s\n  aggregate_interval: 1s\n"
        "web:\n  header_timeout: 60s\n  max_connections: 50\n"  # long: the connection cap alone must protect the daemon
    )
    port = free_port()
    argv = ["prlimit", "--nofile=256:256", "--", sys.executable, "-m", "exporter", "run"]
    argv += ["--listen", f"127.0.0.1:{port}", "--db", str(fixture_copy(SMALL)), "--config", str(config)]
    daemon = start(argv, tmp_path / "daemon.log", f"http://127.0.0.1:{port}", env=daemon_env())
    try:
        wait_until_up(daemon, "/readyz")
        with closing_all(open_half_open(port, 400)) as socks:
            time.sleep(1)  # let the daemon accept them all (before the fix: until out of descriptors)
            started = time.monotonic()
            status, _ = http_get(daemon.url + "/metrics", timeout=1.0)
            assert status == 200 and time.monotonic() - started < 1.0
            assert len(socks) >= 390  # the daemon accepted (then closed) nearly all of them
            assert http_get(daemon.url + "/readyz", timeout=1.0)[0] == 200
            # The refresh still opens the DB: a snapshot taken after the flood started.
            flood = time.time()
            deadline = time.monotonic() + 15
            samples = parse_exposition(http_get(daemon.url + "/metrics", timeout=1.0)[1])
            while sample(samples, "state_exporter_snapshot_timestamp_seconds") <= flood:
                assert time.monotonic() < deadline, "no snapshot after the flood started"
                time.sleep(0.2)
                samples = parse_exposition(http_get(daemon.url + "/metrics", timeout=1.0)[1])
            assert sample(samples, "state_exporter_collector_success", collector="snapshot") == 1
            assert sample(samples, "state_exporter_http_connections_dropped_total", reason="connection_limit") > 0
        assert "Too many open files" not in daemon.output()
    finally:
        daemon.stop()


async def test_a_client_that_does_not_read_the_response_is_cut_at_the_idle_timeout() -> None:
    """A slow-read client keeps the response in the server's buffers: it is aborted after idle_timeout
    instead of holding the connection (and the response's memory) forever."""
    stats = CollectorRegistry()
    config = local(idle_timeout="500ms")
    big = b"#" * 30_000_000  # far more than the socket buffers on both sides hold
    app = build_app(
        registry=CollectorRegistry(),
        readiness=lambda: Readiness(True, "ready"),
        web_config=config,
        version="x",
        render=lambda accept: (big, "text/plain"),
        http_registry=stats,
    )
    server = await start_server(app, config)
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await asyncio.to_thread(sock.connect, ("127.0.0.1", bound_port(server)))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
            deadline = time.monotonic() + 10
            while stats.get_sample_value("state_exporter_http_open_connections") != 0:
                assert time.monotonic() < deadline, "the non-reading client is still connected"
                await asyncio.sleep(0.1)
    finally:
        await server.cleanup()
