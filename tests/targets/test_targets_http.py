"""/probe over a real socket: credentials like /metrics, OpenMetrics and gzip negotiated, HEAD, and the
landing page listing the targets.  Real Targets over fixture copies, refreshed at a pinned clock."""

from __future__ import annotations

import base64
import gzip
import shutil
import threading
from pathlib import Path

import aiohttp
import bcrypt
from prometheus_client import CollectorRegistry
from support import FIXTURES, SMALL06, computed_at
from web_support import always_ready, local

from exporter.clock import ManualClock
from exporter.config import Config
from exporter.targets.serve import Targets
from exporter.web import bound_port, build_app, start_server

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


async def test_probe_is_served_like_metrics(tmp_path: Path) -> None:
    db = tmp_path / Path(SMALL06).name
    shutil.copyfile(FIXTURES / SMALL06, db)
    config = Config.model_validate({"targets": {"orders": {"db": {"path": str(db), "writer_timezone": "UTC"}}}})
    targets = Targets(config.targets, ManualClock(computed_at(SMALL06)), threading.Event())
    targets.by_name["orders"].refresher.refresh()
    users = {"prometheus": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()}
    app = build_app(
        registry=CollectorRegistry(),
        readiness=always_ready,
        web_config=local(basic_auth_users=users),
        version="x",
        probes=targets,
    )
    server = await start_server(app, local(basic_auth_users=users))
    base = f"http://127.0.0.1:{bound_port(server)}"
    auth = {"Authorization": "Basic " + base64.b64encode(b"prometheus:pw").decode()}
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as client:
            async with client.get(f"{base}/probe?target=orders") as response:
                assert response.status == 401, "credentials as for /metrics"
            async with client.get(f"{base}/probe?target=nope") as response:
                assert response.status == 401, "no target list without credentials"
            headers = {"Accept": OPENMETRICS, "Accept-Encoding": "gzip"}
            async with client.get(f"{base}/probe?target=orders", headers={**auth, **headers}) as response:
                assert response.status == 200 and response.headers["Content-Encoding"] == "gzip"
                assert response.headers["Content-Type"].startswith("application/openmetrics-text")
                text = gzip.decompress(await response.read()).decode()
            assert "flujo_workflows{" in text and text.endswith("# EOF\n") and text.count("# EOF") == 1
            async with client.head(f"{base}/probe?target=orders", headers=auth) as response:
                assert response.status == 200
            async with client.get(f"{base}/probe?target=nope", headers=auth) as response:
                assert response.status == 400 and (await response.text()).endswith("NAME one of: orders\n")
            async with client.get(f"{base}/", headers=auth) as response:
                assert '<a href="probe?target=orders">/probe?target=orders</a>' in await response.text()
    finally:
        await server.cleanup()
