"""The daemon's HTTP layer: /metrics, the probes and a landing page, with optional TLS and basic auth.

``GET /metrics`` serves text format 0.0.4 or OpenMetrics after the Accept header, gzipped when accepted;
``GET /healthz`` is liveness (always 200, touches nothing); ``GET /readyz`` calls the readiness check
(200, or 503 with the reason); ``GET /`` is a landing page. HEAD works wherever GET does.

TLS and basic auth follow the Prometheus exporter-toolkit web configuration. With ``basic_auth_users``
set, every path needs credentials EXCEPT ``/healthz`` and ``/readyz``, so Kubernetes probes work without
secrets in the pod spec (they reveal only "alive" and a short readiness reason). Successful bcrypt checks
are cached per (user, sha256(password)); bcrypt runs off the event loop, one check at a time, and unknown
users are checked against a dummy hash so that timing does not reveal which user names exist.

Access logging is off (scrapes every 15 s would flood the logs); a failing handler is logged with its
traceback and answered with a bare 500.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hashlib
import hmac
import html
import logging
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from exporter.config import TLSServerConfig, WebConfig

log = logging.getLogger(__name__)

REALM = "state-exporter"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
# bcrypt("state-exporter-dummy-password", cost 10): checked for unknown users to equalise timing.
_DUMMY_HASH = b"$2b$10$JNlJHirvsOahZCt2snwmV.SKsxtaQ.PoFwb0eslcFa1Dz42aUgQu6"
_METRICS_THREADS = 4
_SHUTDOWN_TIMEOUT = 5.0


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str


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


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (all interfaces, returned as host None)."""
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"listen_address {address!r}: write IPv6 addresses as [ADDRESS]:PORT")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"listen_address {address!r}: expected HOST:PORT with a port 0-65535")
    return host or None, int(port_text)


class _BasicAuth:
    def __init__(self, users: dict[str, str]) -> None:
        for user in users:
            if ":" in user:
                raise ValueError(f"basic_auth_users: user name {user!r} must not contain ':'")
        self._users = [(user.encode(), hashed.encode()) for user, hashed in users.items()]
        self._verified: set[tuple[bytes, bytes]] = set()
        self._lock = asyncio.Lock()

    async def check(self, header: str | None) -> bool:
        credentials = _parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed, known = _DUMMY_HASH, False
        for name, candidate in self._users:  # no early exit: do not reveal which name matched
            if hmac.compare_digest(name, user):
                hashed, known = candidate, True
        key = (user, hashlib.sha256(password).digest())
        if known and key in self._verified:
            return True
        async with self._lock:  # one bcrypt at a time: a password-guessing flood cannot eat all CPUs
            if known and key in self._verified:  # checked while we waited
                return True
            ok = await asyncio.get_running_loop().run_in_executor(None, _checkpw, password, hashed)
        if ok and known:
            self._verified.add(key)
        return ok and known


def _parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # e.g. a password over bcrypt's 72-byte limit
        return False


Renderer = Callable[[str], tuple[bytes, str]]  # Accept header -> (body, content type)


def render_registry(registry: CollectorRegistry) -> Renderer:
    def render(accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(registry), content_type

    return render


def _render_metrics(render: Renderer, accept: str, encodings: str) -> tuple[bytes, dict[str, str]]:
    output, content_type = render(accept)
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    if gzip_accepted(encodings):
        headers["Content-Encoding"] = "gzip"
        output = gzip.compress(output, compresslevel=6)
    return output, headers


# Relative links, so the page also works behind a reverse proxy that adds a path prefix.
_LANDING = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Flujo state exporter</title></head>
<body><h1>Flujo state exporter</h1><p>Version {version}</p><ul>
<li><a href="metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="healthz">/healthz</a>: liveness</li>
<li><a href="readyz">/readyz</a>: readiness</li>
</ul></body></html>
"""


def build_app(
    *,
    registry: CollectorRegistry,
    readiness: Callable[[], Readiness],
    web_config: WebConfig,
    version: str,
    render: Renderer | None = None,
) -> web.Application:
    """The application; raises ValueError for a bad ``basic_auth_users`` entry.  ``render`` replaces
    rendering ``registry`` on every scrape (the daemon caches the snapshot's exposition)."""
    render = render or render_registry(registry)
    auth = _BasicAuth(web_config.basic_auth_users) if web_config.basic_auth_users else None
    executor = ThreadPoolExecutor(max_workers=_METRICS_THREADS, thread_name_prefix="metrics")
    landing = _LANDING.format(version=html.escape(version))

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
        if await auth.check(request.headers.get("Authorization")):
            return await handler(request)
        return web.Response(status=401, text="unauthorized\n", headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})

    async def metrics(request: web.Request) -> web.Response:
        accept, encodings = request.headers.get("Accept", ""), request.headers.get("Accept-Encoding", "")
        body, headers = await asyncio.get_running_loop().run_in_executor(
            executor, _render_metrics, render, accept, encodings
        )
        return web.Response(body=body, headers=headers)

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
        reason = state.reason if state.reason.endswith("\n") else f"{state.reason}\n"
        return web.Response(status=503, text=reason)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=landing, content_type="text/html")

    async def stop_executor(app: web.Application) -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    app = web.Application(middlewares=[errors, basic_auth])
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.on_cleanup.append(stop_executor)
    return app


async def start_server(app: web.Application, web_config: WebConfig) -> web.AppRunner:
    """Serve ``app`` on ``listen_address`` (with TLS when configured); the caller cleans up the runner."""
    host, port = parse_listen_address(web_config.listen_address)
    tls = web_config.tls_server_config
    ssl_context = build_ssl_context(tls) if tls is not None else None
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(exc.errno, f"cannot listen on {web_config.listen_address}: {exc.strerror}") from exc
    except BaseException:
        await runner.cleanup()
        raise
    log.debug("listening on %s (%s)", web_config.listen_address, "https" if ssl_context else "http")
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port the runner listens on (useful after binding port 0)."""
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("the runner is not listening")
