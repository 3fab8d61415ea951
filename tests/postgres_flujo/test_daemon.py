"""The daemon against Flujo's Postgres backend, as deployed: ``--db postgresql://…`` with the read-only
role, its password from a file; /metrics serves the Flujo families, /readyz follows the server (a
stopped server names the problem, a restarted one is read again without a restart of ours)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from postgres import EXPORTER_PASSWORD, PostgresServer, require_postgres
from processes import http_get, running_daemon
from support import parse_exposition, wait_for


def readyz(url: str) -> tuple[int, str]:
    return http_get(url + "/readyz")


def test_daemon_serves_postgres_metrics_and_follows_the_server(tmp_path: Path) -> None:
    # A server of its own: this test stops it.
    root = Path(tempfile.mkdtemp(prefix="state-exporter-pg-daemon-"))
    root.chmod(0o711)
    server = PostgresServer(require_postgres(), root)
    try:
        server.init()
        server.start()
        server.load_template()
        database = server.new_database()
        password_file = tmp_path / "exporter.password"
        password_file.write_text(EXPORTER_PASSWORD + "\n")
        config = f"""
db: {{password_file: {password_file}, query_timeout: 2s}}
web: {{readyz_detail: full}}
metrics: {{refresh_interval: 1s, counts_interval: 1s, aggregate_interval: 1s}}
"""
        with running_daemon(tmp_path, "--db", server.url(database, "exporter"), config=config) as daemon:
            wait_for(lambda: readyz(daemon.url)[0] == 200, 30, "the daemon to become ready")
            status, body = http_get(daemon.url + "/metrics")
            samples = parse_exposition(body)
            assert status == 200
            assert samples[("flujo_workflows", frozenset({("status", "completed")}))] == 36
            assert samples[("flujo_spans_stored", frozenset())] == 224
            assert samples[("state_exporter_engine_info", frozenset({("engine", "flujo"), ("layout", "0.6")}))] == 1
            # The server stops: /readyz says why, /metrics still serves the last values.
            port = server.port
            server.stop()
            wait_for(lambda: readyz(daemon.url)[0] == 503, 30, "readiness to notice the stopped server")
            status, body = readyz(daemon.url)
            assert body.startswith("unreachable"), body
            assert f"127.0.0.1:{port}" in body and "is the server running" in body
            assert http_get(daemon.url + "/metrics")[0] == 200
            # Back on the same port: read again, no restart of the exporter.
            server.start(port)
            wait_for(lambda: readyz(daemon.url)[0] == 200, 30, "readiness after the server's restart")
        output = daemon.output()
        assert "Traceback" not in output, output
        assert EXPORTER_PASSWORD not in output
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
