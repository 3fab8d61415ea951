"""The app served for real on 127.0.0.1 (a real socket, the real server), torn down after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import CollectorRegistry, Gauge
from web_support import LOCAL, Serve, Served, always_ready, local

from exporter.config import WebConfig
from exporter.readiness import Readiness
from exporter.web import WebServer, bound_port, build_app, start_server


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("flujo_test_up", "A sample for the tests.", registry=registry).set(1)
    return registry


@pytest.fixture
async def serve(registry: CollectorRegistry) -> AsyncIterator[Serve]:
    servers: list[WebServer] = []

    async def start(
        web_config: WebConfig | None = None,
        *,
        readiness: Callable[[], Readiness] = always_ready,
        registry: CollectorRegistry | None = registry,
    ) -> Served:
        config = web_config or local()
        assert config.listen_address == LOCAL
        app = build_app(registry=registry or CollectorRegistry(), readiness=readiness, web_config=config, version="x")
        server = await start_server(app, config)
        servers.append(server)
        port = bound_port(server)
        scheme = "https" if config.tls_server_config else "http"
        return Served(server, f"{scheme}://127.0.0.1:{port}", port)

    yield start
    for server in servers:
        await server.cleanup()
