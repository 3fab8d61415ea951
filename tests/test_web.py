"""The HTTP layer, served for real on 127.0.0.1 and queried with a real aiohttp client."""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import bcrypt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families as parse_text
from web_support import always_ready, client_context, local, write_server_tls

from exporter.config import TLSServerConfig, WebConfig
from exporter.readiness import Readiness
from exporter.web import (
    TLSConfigError,
    WebServer,
    bound_port,
    build_app,
    build_ssl_context,
    start_server,
)

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
IDENTITY = {"Accept-Encoding": "identity"}
PASSWORD = "s3cret-Pa55"


class Serve(Protocol):
    def __call__(
        self,
        web_config: WebConfig | None = None,
        *,
        readiness: Callable[[], Readiness] = always_ready,
        version: str = "1.2.3",
    ) -> Awaitable[str]: ...


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    gauge = Gauge("flujo_test_runs", "Runs per pipeline, for the tests.", ["pipeline"], registry=registry)
    gauge.labels("alpha").set(3)
    gauge.labels("beta").set(1.5)
    return registry


@pytest.fixture
async def serve(registry: CollectorRegistry) -> AsyncIterator[Serve]:
    runners: list[WebServer] = []

    async def start(
        web_config: WebConfig | None = None,
        *,
        readiness: Callable[[], Readiness] = always_ready,
        version: str = "1.2.3",
    ) -> str:
        config = web_config or local()
        app = build_app(registry=registry, readiness=readiness, web_config=config, version=version)
        runner = await start_server(app, config)
        runners.append(runner)
        scheme = "https" if config.tls_server_config else "http"
        return f"{scheme}://127.0.0.1:{bound_port(runner)}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
        yield client


def parse_openmetrics(text: str) -> Iterable[Metric]:
    families: Iterable[Metric] = openmetrics_parser.text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
    return families


def samples(families: Iterable[Metric]) -> dict[tuple[str, str], float]:
    """The test registry's samples (the HTTP layer's own metrics are tested in tests/web)."""
    return {
        (s.name, s.labels.get("pipeline", "")): s.value
        for f in families
        for s in f.samples
        if s.name.startswith("flujo_test_")
    }


# --- /metrics ---------------------------------------------------------------------------------------


async def test_metrics_text_format(serve: Serve, session: aiohttp.ClientSession) -> None:
    base = await serve()
    async with session.get(f"{base}/metrics", headers=IDENTITY) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == TEXT_TYPE
        assert "Content-Encoding" not in response.headers
        body = await response.text()
    assert "# EOF" not in body
    assert samples(parse_text(body)) == {("flujo_test_runs", "alpha"): 3, ("flujo_test_runs", "beta"): 1.5}


async def test_metrics_openmetrics(serve: Serve, session: aiohttp.ClientSession) -> None:
    base = await serve()
    headers = {"Accept": f"{OPENMETRICS},text/plain;q=0.5", **IDENTITY}
    async with session.get(f"{base}/metrics", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith(f"{OPENMETRICS}; charset=utf-8")
        body = await response.text()
    assert body.endswith("# EOF\n")
    assert samples(parse_openmetrics(body))[("flujo_test_runs", "alpha")] == 3


async def test_metrics_gzip(serve: Serve) -> None:
    base = await serve()
    async with (
        aiohttp.ClientSession(auto_decompress=False) as raw,
        raw.get(f"{base}/metrics", headers={"Accept-Encoding": "gzip"}) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Type"] == TEXT_TYPE
        body = gzip.decompress(await response.read()).decode()
    assert samples(parse_text(body))[("flujo_test_runs", "beta")] == 1.5


async def test_metrics_head(serve: Serve, session: aiohttp.ClientSession) -> None:
    base = await serve()
    async with session.head(f"{base}/metrics", headers=IDENTITY) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == TEXT_TYPE
        assert await response.read() == b""


class BlockingCollector:
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def collect(self) -> Iterator[Metric]:
        self.entered.set()
        self.release.wait(10)
        yield GaugeMetricFamily("flujo_test_blocking", "Blocks until released.", value=1)


async def test_blocking_collector_leaves_event_loop_free(
    serve: Serve, session: aiohttp.ClientSession, registry: CollectorRegistry
) -> None:
    blocking = BlockingCollector()
    registry.register(blocking)
    base = await serve()
    scrape = asyncio.create_task(session.get(f"{base}/metrics"))
    try:
        assert await asyncio.to_thread(blocking.entered.wait, 5)
        for path in ("/healthz", "/readyz", "/"):
            async with session.get(f"{base}{path}", timeout=aiohttp.ClientTimeout(total=1)) as response:
                assert response.status == 200
        assert not scrape.done()
    finally:
        blocking.release.set()
    async with await scrape as response:
        assert "flujo_test_blocking 1.0" in await response.text()


class FailingCollector:
    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("secret internal detail")


async def test_failing_collector_is_500_without_traceback(
    serve: Serve,
    session: aiohttp.ClientSession,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry.register(FailingCollector())
    base = await serve()
    with caplog.at_level(logging.ERROR, logger="exporter.web"):
        async with session.get(f"{base}/metrics") as response:
            assert response.status == 500
            body = await response.text()
    assert "secret" not in body
    assert "Traceback" not in body
    assert any(record.exc_info and "GET /metrics" in record.getMessage() for record in caplog.records)


async def test_concurrent_scrapers(serve: Serve) -> None:
    base = await serve()
    deadline = time.monotonic() + 3
    counts: list[int] = []

    async def scraper(index: int, client: aiohttp.ClientSession) -> None:
        openmetrics = index % 2 == 1
        headers = {"Accept": OPENMETRICS} if openmetrics else {}
        done = 0
        while time.monotonic() < deadline:
            async with client.get(f"{base}/metrics", headers=headers) as response:
                assert response.status == 200
                body = await response.text()
            parsed = samples(parse_openmetrics(body) if openmetrics else parse_text(body))
            assert parsed[("flujo_test_runs", "alpha")] == 3
            done += 1
        counts.append(done)

    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as client:
        await asyncio.gather(*(scraper(index, client) for index in range(50)))
    assert len(counts) == 50
    assert min(counts) >= 1
    assert sum(counts) >= 100


async def test_access_log_is_off(
    serve: Serve, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    base = await serve()
    with caplog.at_level(logging.DEBUG, logger="aiohttp.access"):
        async with session.get(f"{base}/metrics") as response:
            assert response.status == 200
    assert not [record for record in caplog.records if record.name == "aiohttp.access"]


# --- probes, landing page, unknown routes -------------------------------------------------------------


async def test_healthz_never_calls_readiness(serve: Serve, session: aiohttp.ClientSession) -> None:
    calls = 0

    def broken() -> Readiness:
        nonlocal calls
        calls += 1
        raise RuntimeError("database is locked")

    base = await serve(readiness=broken)
    async with session.get(f"{base}/healthz") as response:
        assert response.status == 200
        assert await response.text() == "ok"
    assert calls == 0


async def test_readyz(serve: Serve, session: aiohttp.ClientSession) -> None:
    state = Readiness(True, "")
    base = await serve(readiness=lambda: state)
    async with session.get(f"{base}/readyz") as response:
        assert (response.status, await response.text()) == (200, "ready\n")
    state = Readiness(False, "unknown_layout", "/srv/app/flujo.db: not a Flujo state DB (tables: invoices)")
    async with session.get(f"{base}/readyz") as response:
        assert response.status == 503
        assert response.headers["Content-Type"].startswith("text/plain")
        assert await response.text() == "unknown_layout\n"  # the detail needs web.readyz_detail: full


async def test_readyz_when_the_check_raises(
    serve: Serve, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Readiness:
        raise RuntimeError("secret internal detail")

    base = await serve(readiness=broken)
    with caplog.at_level(logging.ERROR, logger="exporter.web"):
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 503
            body = await response.text()
    assert "secret" not in body
    assert any(record.exc_info for record in caplog.records)


async def test_readiness_runs_off_the_event_loop(serve: Serve, session: aiohttp.ClientSession) -> None:
    release = threading.Event()

    def slow() -> Readiness:
        release.wait(10)
        return Readiness(True, "")

    base = await serve(readiness=slow)
    probe = asyncio.create_task(session.get(f"{base}/readyz"))
    try:
        await asyncio.sleep(0.1)
        async with session.get(f"{base}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as response:
            assert response.status == 200
    finally:
        release.set()
    async with await probe as response:
        assert response.status == 200


async def test_landing_page(serve: Serve, session: aiohttp.ClientSession) -> None:
    base = await serve(version="1.2.3<b>")
    async with session.get(f"{base}/") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/html")
        page = await response.text()
    assert "<title>" in page
    assert "1.2.3&lt;b&gt;" in page
    for target in ("metrics", "healthz", "readyz"):
        assert f'href="{target}"' in page


async def test_unknown_path_and_wrong_method(serve: Serve, session: aiohttp.ClientSession) -> None:
    base = await serve()
    async with session.get(f"{base}/nope") as response:
        assert response.status == 404
    async with session.post(f"{base}/metrics") as response:
        assert response.status == 405


# --- basic auth ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def users() -> dict[str, str]:
    def hashed(password: str) -> str:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()

    return {"alice": hashed(PASSWORD), "jürgen": hashed("grüße")}


@pytest.fixture
async def auth_base(serve: Serve, users: dict[str, str]) -> str:
    return await serve(local(basic_auth_users=users))


def basic(user: str, password: str, scheme: str = "Basic") -> dict[str, str]:
    return {"Authorization": f"{scheme} " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def status(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> int:
    async with session.get(url, **kwargs) as response:
        await response.read()
        return response.status


async def test_auth_missing_credentials(auth_base: str, session: aiohttp.ClientSession) -> None:
    for path in ("/metrics", "/", "/nope"):
        async with session.get(f"{auth_base}{path}") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == 'Basic realm="state-exporter"'
            assert "flujo_test_runs" not in await response.text()


async def test_auth_rejects_bad_credentials(auth_base: str, session: aiohttp.ClientSession) -> None:
    url = f"{auth_base}/metrics"
    assert await status(session, url, headers=basic("alice", "wrong")) == 401
    assert await status(session, url, headers=basic("mallory", PASSWORD)) == 401
    assert await status(session, url, headers=basic("alic", PASSWORD)) == 401
    assert await status(session, url, headers=basic("alice", "")) == 401


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Basic ",
        "Basic !!!not-base64!!!",
        "Basic YWxpY2U",  # bad padding
        "Bearer abc.def.ghi",
        "Basic " + base64.b64encode(b"alice").decode(),  # no colon
        "Basic " + base64.b64encode(b"\xff\xfe:\xff\x00").decode(),  # not UTF-8, NUL byte
        "Basic " + base64.b64encode(b"alice:" + b"x" * 100).decode(),  # over bcrypt's 72 bytes
        "Basic " + base64.b64encode(b"alice:" + PASSWORD.encode() + b"x" * 80).decode(),
        "Digest username=alice",
    ],
)
async def test_auth_malformed_header_is_401(auth_base: str, session: aiohttp.ClientSession, header: str) -> None:
    assert await status(session, f"{auth_base}/metrics", headers={"Authorization": header}) == 401


async def test_auth_accepts_good_credentials(auth_base: str, session: aiohttp.ClientSession) -> None:
    good = basic("alice", PASSWORD)
    assert await status(session, f"{auth_base}/metrics", headers=good) == 200
    assert await status(session, f"{auth_base}/", headers=good) == 200
    assert await status(session, f"{auth_base}/nope", headers=good) == 404
    assert await status(session, f"{auth_base}/metrics", headers=basic("jürgen", "grüße")) == 200
    lowercase = basic("alice", PASSWORD, scheme="basic")
    assert await status(session, f"{auth_base}/metrics", headers=lowercase) == 200


async def test_auth_leaves_probes_open(auth_base: str, session: aiohttp.ClientSession) -> None:
    assert await status(session, f"{auth_base}/healthz") == 200
    assert await status(session, f"{auth_base}/readyz") == 200
    assert await status(session, f"{auth_base}/healthz", headers=basic("alice", "wrong")) == 200


async def test_auth_caches_successful_checks_only(
    auth_base: str, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        nonlocal calls
        calls += 1
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)  # the module exporter.web calls into
    for _ in range(5):
        assert await status(session, f"{auth_base}/metrics", headers=basic("alice", PASSWORD)) == 200
    assert calls == 1
    for _ in range(3):
        assert await status(session, f"{auth_base}/metrics", headers=basic("alice", "nope")) == 401
    assert calls == 4
    # An unknown user still pays one bcrypt check (against a dummy hash): no timing oracle.
    assert await status(session, f"{auth_base}/metrics", headers=basic("eve", PASSWORD)) == 401
    assert calls == 5


def test_auth_rejects_user_names_with_colon(registry: CollectorRegistry) -> None:
    def build(users: dict[str, str]) -> None:
        config = WebConfig(basic_auth_users=users)
        build_app(registry=registry, readiness=always_ready, web_config=config, version="x")

    with pytest.raises(ValueError, match="must not contain ':'"):
        build({"a:b": bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=4)).decode()})


# --- TLS ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(tmp_path: Path, ca: trustme.CA) -> TLSServerConfig:
    return write_server_tls(tmp_path, ca)


async def test_https_scrape(
    serve: Serve, session: aiohttp.ClientSession, server_tls: TLSServerConfig, ca: trustme.CA
) -> None:
    base = await serve(local(tls_server_config=server_tls))
    async with session.get(f"{base}/metrics", ssl=client_context(ca)) as response:
        assert response.status == 200
        assert ("flujo_test_runs", "alpha") in samples(parse_text(await response.text()))
    with pytest.raises(aiohttp.ClientConnectorCertificateError):  # the CA is not trusted by default
        await status(session, f"{base}/metrics", ssl=ssl.create_default_context())
    with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port
        await status(session, base.replace("https://", "http://") + "/metrics")


async def test_tls13_minimum(
    serve: Serve, session: aiohttp.ClientSession, server_tls: TLSServerConfig, ca: trustme.CA
) -> None:
    tls = server_tls.model_copy(update={"min_version": "TLS13"})
    base = await serve(local(tls_server_config=tls))
    assert await status(session, f"{base}/healthz", ssl=client_context(ca)) == 200
    old = client_context(ca)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(aiohttp.ClientError):
        await status(session, f"{base}/healthz", ssl=old)


async def test_mtls_requires_client_certificate(
    serve: Serve,
    session: aiohttp.ClientSession,
    server_tls: TLSServerConfig,
    ca: trustme.CA,
    tmp_path: Path,
) -> None:
    tls = server_tls.model_copy(
        update={"client_ca_file": tmp_path / "ca.crt", "client_auth_type": "RequireAndVerifyClientCert"}
    )
    base = await serve(local(tls_server_config=tls))
    with pytest.raises(aiohttp.ClientError):
        await status(session, f"{base}/metrics", ssl=client_context(ca))
    foreign = client_context(ca)
    trustme.CA().issue_cert("intruder.example").configure_cert(foreign)
    with pytest.raises(aiohttp.ClientError):
        await status(session, f"{base}/metrics", ssl=foreign)
    assert await status(session, f"{base}/metrics", ssl=client_context(ca, client_cert=True)) == 200


async def test_optional_client_certificate(
    serve: Serve,
    session: aiohttp.ClientSession,
    server_tls: TLSServerConfig,
    ca: trustme.CA,
    tmp_path: Path,
) -> None:
    tls = server_tls.model_copy(update={"client_ca_file": tmp_path / "ca.crt"})
    assert build_ssl_context(tls).verify_mode == ssl.CERT_OPTIONAL
    assert build_ssl_context(server_tls).verify_mode == ssl.CERT_NONE
    base = await serve(local(tls_server_config=tls))
    assert await status(session, f"{base}/metrics", ssl=client_context(ca)) == 200
    assert await status(session, f"{base}/metrics", ssl=client_context(ca, client_cert=True)) == 200


def test_bad_tls_files_name_the_file(server_tls: TLSServerConfig, ca: trustme.CA, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(TLSConfigError, match=r"garbage\.key"):
        build_ssl_context(server_tls.model_copy(update={"key_file": garbage}))

    not_pem = tmp_path / "empty.key"
    not_pem.write_text("")
    with pytest.raises(TLSConfigError, match=r"key_file .*empty\.key.*private key"):
        build_ssl_context(server_tls.model_copy(update={"key_file": not_pem}))

    other = tmp_path / "other.key"
    ca.issue_cert("other.example").private_key_pem.write_to_path(other)
    with pytest.raises(TLSConfigError, match=r"key_file .*other\.key does not match"):
        build_ssl_context(server_tls.model_copy(update={"key_file": other}))

    with pytest.raises(TLSConfigError, match=r"cert_file .*missing\.crt.*cannot read"):
        build_ssl_context(server_tls.model_copy(update={"cert_file": tmp_path / "missing.crt"}))

    with pytest.raises(TLSConfigError, match=r"cert_file .*server\.key.*certificate"):
        build_ssl_context(server_tls.model_copy(update={"cert_file": server_tls.key_file}))

    with pytest.raises(TLSConfigError, match="needs client_ca_file"):
        build_ssl_context(server_tls.model_copy(update={"client_auth_type": "RequireAndVerifyClientCert"}))

    with pytest.raises(TLSConfigError, match=r"client_ca_file .*server\.key"):
        build_ssl_context(server_tls.model_copy(update={"client_ca_file": server_tls.key_file}))


def test_encrypted_key_fails_without_prompting(server_tls: TLSServerConfig, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(server_tls.key_file.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass"),
        )
    )
    with pytest.raises(TLSConfigError, match=r"encrypted\.key: encrypted keys are not supported"):
        build_ssl_context(server_tls.model_copy(update={"key_file": encrypted}))


async def test_start_server_with_bad_key_fails_clearly(
    registry: CollectorRegistry, server_tls: TLSServerConfig, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("nonsense")
    config = local(tls_server_config=server_tls.model_copy(update={"key_file": bad}))
    app = build_app(registry=registry, readiness=always_ready, web_config=config, version="x")
    with pytest.raises(TLSConfigError, match=r"bad\.key"):
        await start_server(app, config)


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_listen_address(registry: CollectorRegistry, session: aiohttp.ClientSession) -> None:
    config = WebConfig().model_copy(update={"listen_address": "[::1]:0"})
    runner = await start_server(
        build_app(registry=registry, readiness=always_ready, web_config=config, version="x"), config
    )
    try:
        assert await status(session, f"http://[::1]:{bound_port(runner)}/healthz") == 200
    finally:
        await runner.cleanup()


async def test_empty_host_listens_on_all_interfaces(
    registry: CollectorRegistry, session: aiohttp.ClientSession
) -> None:
    config = WebConfig().model_copy(update={"listen_address": ":0"})
    runner = await start_server(
        build_app(registry=registry, readiness=always_ready, web_config=config, version="x"), config
    )
    try:
        listener = runner.listeners[0]
        assert isinstance(listener, asyncio.Server)
        # Port 0 binds each address family to its own port: take the IPv4 socket's.
        port = next(sock.getsockname()[1] for sock in listener.sockets if sock.family == socket.AF_INET)
        assert await status(session, f"http://127.0.0.1:{port}/healthz") == 200
    finally:
        await runner.cleanup()


async def test_port_in_use_names_the_address(registry: CollectorRegistry, serve: Serve) -> None:
    base = await serve()
    config = WebConfig(listen_address=base.removeprefix("http://"))
    app = build_app(registry=registry, readiness=always_ready, web_config=config, version="x")
    with pytest.raises(OSError, match=f"cannot listen on {config.listen_address}"):
        await start_server(app, config)
