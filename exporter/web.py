"""The daemon's HTTP layer: /metrics, the probes and a landing page, with optional TLS and basic auth.

``GET /metrics`` serves text format 0.0.4 or OpenMetrics after the Accept header, gzipped when accepted;
``GET /healthz`` is liveness (always 200, touches nothing); ``GET /readyz`` calls the readiness check
(200, or 503 with a short reason code; the detail, which may name files and tables, only with
``web.readyz_detail: full``); ``GET /`` is a landing page. HEAD works wherever GET does.  In
multi-target mode ``GET /probe?target=NAME`` serves one configured target's metrics (see
:mod:`exporter.targets.serve`); ``/metrics`` then has the exporter's own only.

TLS and basic auth follow the Prometheus exporter-toolkit web configuration. With ``basic_auth_users``
set, every path needs credentials EXCEPT ``/healthz`` and ``/readyz``, so Kubernetes probes work without
secrets in the pod spec (they reveal only "alive" and a short readiness reason); see
:mod:`exporter.web_auth`. With client certificates required, ``web.probe_listen_address`` adds a
plain-HTTP listener that serves only the two probes.

Connections are bounded (:mod:`exporter.web_connections`): header and idle deadlines, a connection
cap, and malformed requests answered 400 with one debug line, counted (:mod:`exporter.web_stats`).
Access logging is off (scrapes every 15 s would flood the logs); a failing handler is logged with its
traceback and answered with a bare 500.
"""

from __future__ import annotations

import asyncio
import gzip
import html
import logging
import ssl
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from exporter.config import TLSServerConfig, WebConfig
from exporter.listen_address import parse_listen_address
from exporter.readiness import Readiness
from exporter.web_auth import RETRY_AFTER_S, BasicAuth, Verdict
from exporter.web_connections import ConnectionLimits, ConnectionTable, connection_of, make_protocol_factory
from exporter.web_stats import AuthFailure, HttpStats

log = logging.getLogger(__name__)

REALM = "state-exporter"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_METRICS_THREADS = 4
_SHUTDOWN_TIMEOUT = 5.0
_BACKLOG = 128
_STATS = web.AppKey("http_stats", HttpStats)


class TLSConfigError(ValueError):
    """The TLS server configuration cannot be loaded; the message names the file."""


def build_ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """Server-side context: certificate chain and key, minimum version and client certificates."""
    _check_pem(tls.cert_file, "cert_file", b"-----BEGIN CERTIFICATE-----", "a PEM certificate")
    _check_pem(tls.key_file, "key_file", b"PRIVATE KEY-----", "a PEM private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "TLS13" else ssl.TLSVersion.TLSv1_2

    def no_password() -> str:  # never let OpenSSL prompt on a terminal for an encrypted key
        raise TLSConfigError(f"tls_server_config.key_file {tls.key_file}: encrypted keys are not supported")

    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSConfigError(
                f"tls_server_config.key_file {tls.key_file} does not match cert_file {tls.cert_file}"
            ) from exc
        raise TLSConfigError(
            f"tls_server_config: cannot load cert_file {tls.cert_file} with key_file {tls.key_file}: {exc}"
        ) from exc
    if tls.client_auth_type == "RequireAndVerifyClientCert" and tls.client_ca_file is None:
        raise TLSConfigError("tls_server_config: RequireAndVerifyClientCert needs client_ca_file")
    if tls.client_ca_file is not None:
        _check_pem(tls.client_ca_file, "client_ca_file", b"-----BEGIN CERTIFICATE-----", "a PEM certificate")
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except ssl.SSLError as exc:
            raise TLSConfigError(f"tls_server_config.client_ca_file {tls.client_ca_file}: {exc}") from exc
        required = tls.client_auth_type == "RequireAndVerifyClientCert"
        context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    return context


def _check_pem(path: Path, key: str, marker: bytes, what: str) -> None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"tls_server_config.{key} {path}: cannot read: {exc.strerror or exc}") from exc
    if marker not in data:
        raise TLSConfigError(f"tls_server_config.{key} {path}: does not contain {what}")


Renderer = Callable[[str], tuple[bytes, str]]  # Accept header -> (body, content type)


class Probes(Protocol):
    """Multi-target mode's ``/probe?target=NAME`` (:mod:`exporter.targets.serve`)."""

    def names(self) -> list[str]: ...

    def render(self, name: str, accept: str) -> tuple[bytes, str] | None:
        """``None``: no target of that name."""
        ...


def render_registry(registry: CollectorRegistry) -> Renderer:
    def render(accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(registry), content_type

    return render


def _render_metrics(render: Renderer, accept: str, encodings: str) -> tuple[bytes, dict[str, str]]:
    return _encoded(*render(accept), encodings)


def _render_probe(probes: Probes, name: str, accept: str, encodings: str) -> tuple[bytes, dict[str, str]] | None:
    rendered = probes.render(name, accept)
    return None if rendered is None else _encoded(*rendered, encodings)


def _encoded(output: bytes, content_type: str, encodings: str) -> tuple[bytes, dict[str, str]]:
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    if gzip_accepted(encodings):
        headers["Content-Encoding"] = "gzip"
        output = gzip.compress(output, compresslevel=6)
    return output, headers


# Relative links, so the page also works behind a reverse proxy that adds a path prefix.
_LANDING = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>state-exporter</title></head>
<body><h1>state-exporter</h1><p>Version {version}</p><ul>
<li><a href="metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="healthz">/healthz</a>: liveness</li>
<li><a href="readyz">/readyz</a>: readiness</li>{probes}
</ul></body></html>
"""
_PROBE_LINK = '\n<li><a href="probe?target={query}">/probe?target={name}</a>: metrics of target {name}</li>'


def build_app(
    *,
    registry: CollectorRegistry,
    readiness: Callable[[], Readiness],
    web_config: WebConfig,
    version: str,
    render: Renderer | None = None,
    http_registry: CollectorRegistry | None = None,
    probes: Probes | None = None,
) -> web.Application:
    """The application; raises ValueError for a bad ``basic_auth_users`` entry.  ``render`` replaces
    rendering ``registry`` on every scrape (the daemon caches the snapshot's exposition).  The HTTP
    layer's own metrics are registered on ``http_registry`` (default ``registry``) while the app runs:
    give a registry rendered at every scrape.  ``probes``: multi-target mode, served at
    ``/probe?target=NAME`` (configured names only; anything else is answered 400 listing them)."""
    render = render or render_registry(registry)
    stats_registry = http_registry or registry
    stats = HttpStats()
    auth = BasicAuth(web_config.basic_auth_users) if web_config.basic_auth_users else None
    executor = ThreadPoolExecutor(max_workers=_METRICS_THREADS, thread_name_prefix="metrics")

    def landing() -> str:  # the targets are the current ones (a reload may change them)
        names = probes.names() if probes is not None else []
        links = "".join(_PROBE_LINK.format(query=urllib.parse.quote(n), name=html.escape(n)) for n in names)
        return _LANDING.format(version=html.escape(version), probes=links)

    full_detail = web_config.readyz_detail == "full"

    @web.middleware
    async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Tell the connection's guard when a request runs; the probe listener serves the probes only."""
        connection = connection_of(request)
        if connection is None:
            return await handler(request)
        if connection.probe_only and request.path not in OPEN_PATHS:
            return web.Response(status=404, text="not found: this listener serves /healthz and /readyz only\n")
        connection.request_started()
        try:
            return await handler(request)
        finally:
            connection.request_finished()

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("error handling %s %s", request.method, request.path)
            return web.Response(status=500, text="internal server error\n")

    @web.middleware
    async def basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if auth is None or request.path in OPEN_PATHS:
            return await handler(request)
        verdict = await auth.check(request.headers.get("Authorization"), request.remote or "")
        if verdict is Verdict.ALLOWED:
            return await handler(request)
        if verdict is Verdict.THROTTLED:
            stats.auth_failure(AuthFailure.THROTTLED)
            return web.Response(
                status=429, text="too many logins pending, retry later\n", headers={"Retry-After": str(RETRY_AFTER_S)}
            )
        stats.auth_failure(AuthFailure.INVALID)
        return web.Response(status=401, text="unauthorized\n", headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})

    async def metrics(request: web.Request) -> web.Response:
        accept, encodings = request.headers.get("Accept", ""), request.headers.get("Accept-Encoding", "")
        body, headers = await asyncio.get_running_loop().run_in_executor(
            executor, _render_metrics, render, accept, encodings
        )
        return web.Response(body=body, headers=headers)

    def probe_route(targets: Probes) -> Handler:
        async def probe(request: web.Request) -> web.StreamResponse:
            accept, encodings = request.headers.get("Accept", ""), request.headers.get("Accept-Encoding", "")
            asked = request.query.getall("target", [])
            if len(asked) == 1:
                found = await asyncio.get_running_loop().run_in_executor(
                    executor, _render_probe, targets, asked[0], accept, encodings
                )
                if found is not None:
                    return web.Response(body=found[0], headers=found[1])
            # The value asked for is never echoed: it may be a path or a DSN with a password in it.
            problem = "unknown target" if len(asked) == 1 else "give exactly one target parameter"
            configured = ", ".join(targets.names())
            return web.Response(status=400, text=f"{problem}: /probe?target=NAME, NAME one of: {configured}\n")

        return probe

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        try:
            state = await asyncio.get_running_loop().run_in_executor(None, readiness)
        except Exception:
            log.exception("readiness check failed")
            return web.Response(status=503, text="readiness check failed\n")
        if state.ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=_not_ready_text(state, full=full_detail))

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=landing(), content_type="text/html")

    async def register_stats(app: web.Application) -> None:
        stats_registry.register(stats)

    async def release(app: web.Application) -> None:
        stats_registry.unregister(stats)
        executor.shutdown(wait=False, cancel_futures=True)
        if auth is not None:
            auth.close()

    app = web.Application(middlewares=[track, errors, basic_auth])
    app[_STATS] = stats
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics)
    if probes is not None:
        app.router.add_get("/probe", probe_route(probes))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.on_startup.append(register_stats)
    app.on_cleanup.append(release)
    return app


def _not_ready_text(state: Readiness, *, full: bool) -> str:
    text = f"{state.reason}: {state.detail}" if full and state.detail else state.reason
    return text if text.endswith("\n") else f"{text}\n"


@dataclass
class WebServer:
    """The running server: the app's runner and its listening sockets (the main one first)."""

    runner: web.AppRunner
    listeners: list[asyncio.AbstractServer]

    async def cleanup(self) -> None:
        for listener in self.listeners:
            listener.close()  # closes the listening sockets at once
        # Closes the open connections, then runs the app's cleanup.  Not wait_closed(): from Python 3.12
        # it also waits for TLS handshakes in progress, which only their timeout ends.
        await self.runner.cleanup()


async def start_server(app: web.Application, web_config: WebConfig) -> WebServer:
    """Serve ``app`` on ``listen_address`` (with TLS when configured) and on ``probe_listen_address``
    (plain HTTP, probes only) when set; the caller cleans up the returned server."""
    tls = web_config.tls_server_config
    ssl_context = build_ssl_context(tls) if tls is not None else None
    limits = ConnectionLimits(
        header_timeout=web_config.header_timeout.total_seconds(),
        body_timeout=web_config.body_timeout.total_seconds(),
        idle_timeout=web_config.idle_timeout.total_seconds(),
        max_connections=web_config.max_connections,
    )
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    assert runner.server is not None  # set by setup()
    stats = app[_STATS]
    server = WebServer(runner, [])
    try:
        table = ConnectionTable(limits.max_connections, stats)  # one cap over both listeners
        endpoints = [(web_config.listen_address, ssl_context, False)]
        if web_config.probe_listen_address is not None:
            endpoints.append((web_config.probe_listen_address, None, True))
        for address, context, probe_only in endpoints:
            factory = make_protocol_factory(runner.server, table, limits, stats, probe_only=probe_only)
            server.listeners.append(
                await _listen(address, factory, context, limits.header_timeout, limits.max_connections)
            )
    except BaseException:
        await server.cleanup()
        raise
    log.debug("listening on %s (%s)", web_config.listen_address, "https" if ssl_context else "http")
    return server


async def _listen(
    address: str,
    factory: Callable[[], asyncio.Protocol],
    ssl_context: ssl.SSLContext | None,
    handshake_timeout: float,
    max_connections: int,
) -> asyncio.AbstractServer:
    host, port = parse_listen_address(address, allow_port_zero=True)  # port 0: the tests' ephemeral port
    loop = asyncio.get_running_loop()
    try:
        return await loop.create_server(
            factory,
            host,
            port,
            ssl=ssl_context,
            # asyncio accepts up to `backlog` connections at once before the guard can close any: keep
            # that batch within the cap, so the descriptors used stay near max_connections.
            backlog=min(_BACKLOG, max_connections),
            # A TLS handshake happens before the guard sees the connection: bound it the same way.
            ssl_handshake_timeout=handshake_timeout if ssl_context is not None else None,
        )
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from exc


def bound_port(server: WebServer) -> int:
    """The TCP port of the main listener (useful after binding port 0)."""
    return _port(server, 0)


def probe_port(server: WebServer) -> int:
    """The TCP port of the probe listener."""
    return _port(server, 1)


def _port(server: WebServer, index: int) -> int:
    if index >= len(server.listeners):
        raise RuntimeError("the server is not listening there")
    listener = server.listeners[index]
    assert isinstance(listener, asyncio.Server)
    return int(listener.sockets[0].getsockname()[1])
