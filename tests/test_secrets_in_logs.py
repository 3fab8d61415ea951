"""Secrets never reach the logs: a real daemon with a secret in every place one can go, failing receivers
(HTTP 500s, refused connections), debug logging and SIGHUP reloads, good and bad; then every log line is
searched for every secret."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bcrypt
from postgres import PostgresServer
from processes import Process, daemon_env, free_port, http_get, start, wait_until_up
from support import SMALL, parse_exposition, sample, wait_for


def secret(name: str) -> str:
    return f"s3cr3t-{name}-{uuid.uuid4().hex[:12]}"


class FailingReceiver:
    """An HTTP server on 127.0.0.1 that answers every POST with a 500; records path and headers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                body = b"internal error, try again later"
                self.send_response(500)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FailingReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def seen(self, prefix: str) -> list[tuple[str, dict[str, str]]]:
        return [request for request in list(self.requests) if request[0].startswith(prefix)]


def make_stuck_run(db: Path) -> None:
    """One run of the fixture left 'running' and not updated for 3 hours: a stuck-run alert is due."""
    updated = (datetime.now(UTC) - timedelta(hours=3)).replace(tzinfo=None).isoformat()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (run_id,) = conn.execute("SELECT run_id FROM workflow_state ORDER BY run_id LIMIT 1").fetchone()
        conn.execute("UPDATE workflow_state SET status = 'running', updated_at = ? WHERE run_id = ?", (updated, run_id))
        conn.commit()


@contextlib.contextmanager
def daemon(tmp: Path, config: Path, env: dict[str, str]) -> Iterator[Process]:
    port = free_port()
    argv = [sys.executable, "-m", "exporter", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}"]
    process = start(argv, tmp / "daemon.log", f"http://127.0.0.1:{port}", env=env)
    try:
        wait_until_up(process, "/healthz")
        yield process
    finally:
        process.stop()


def test_no_secret_in_any_log_line(fixture_copy, tmp_path: Path) -> None:
    s = {
        name: secret(name)
        for name in (
            "otlp-query",
            "otlp-header",
            "otel-env-header",
            "webhook-user",
            "webhook-password",
            "webhook-token",
            "am-user",
            "am-password",
            "scrape-password",
            "reload-password",
            "reload-token",
            "reload-header",
        )
    }
    s["bcrypt-hash"] = bcrypt.hashpw(s["scrape-password"].encode(), bcrypt.gensalt(4)).decode()
    db = fixture_copy(SMALL)
    make_stuck_run(db)
    refused = free_port()
    config = tmp_path / "config.yaml"
    env = {**daemon_env(), "OTEL_EXPORTER_OTLP_HEADERS": f"x-api-key={s['otel-env-header']}"}

    def write_config(otlp_endpoint: str, webhook_url: str, headers: str) -> None:
        config.write_text(
            f"""
db: {{path: {db}, writer_timezone: UTC}}
logging: {{level: debug}}
metrics: {{refresh_interval: 1s, counts_interval: 1s, aggregate_interval: 1s}}
web:
  basic_auth_users: {{scraper: '{s["bcrypt-hash"]}'}}
traces:
  enabled: true
  protocol: http/protobuf
  endpoint: '{otlp_endpoint}'
  headers: {headers}
  poll_interval: 500ms
  settle_period: 0s
  state_file: {tmp_path / "traces-state.sqlite"}
  retry: {{initial_backoff: 50ms, max_backoff: 200ms}}
jobs:
  stuck_alerts:
    enabled: true
    interval: 1s
    jitter: 0s
    attempts: 2
    retry_backoff: 50ms
    webhook: {{url: '{webhook_url}'}}
    alertmanager: {{url: 'http://{s["am-user"]}:{s["am-password"]}@127.0.0.1:{refused}'}}
"""
        )

    good = {"Authorization": "Basic " + base64.b64encode(f"scraper:{s['scrape-password']}".encode()).decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(b"scraper:not-it").decode()}
    headers = f"{{authorization: 'Bearer {s['otlp-header']}'}}"
    with FailingReceiver() as receiver:
        otlp = f"http://127.0.0.1:{receiver.port}/v1/traces?api-key={s['otlp-query']}"
        hook = f"http://{s['webhook-user']}:{s['webhook-password']}@127.0.0.1:{receiver.port}/hook?token={s['webhook-token']}"
        write_config(otlp, hook, headers)
        with daemon(tmp_path, config, env) as process:
            # The secrets are really in use: the receivers get them.
            wait_for(lambda: len(receiver.seen("/v1/traces")) >= 3, 30, "OTLP requests")
            path, sent = receiver.seen("/v1/traces")[0]
            assert path == f"/v1/traces?api-key={s['otlp-query']}"
            assert sent["authorization"] == f"Bearer {s['otlp-header']}"
            assert sent["x-api-key"] == s["otel-env-header"]
            wait_for(lambda: len(receiver.seen("/hook")) >= 2, 30, "webhook requests")
            path, sent = receiver.seen("/hook")[0]
            assert path == f"/hook?token={s['webhook-token']}"
            basic = base64.b64encode(f"{s['webhook-user']}:{s['webhook-password']}".encode()).decode()
            assert sent["authorization"] == f"Basic {basic}"
            assert http_get(process.url + "/metrics", headers=wrong)[0] == 401

            def alertmanager_failed() -> bool:
                status, body = http_get(process.url + "/metrics", headers=good)
                counted = sample(
                    parse_exposition(body),
                    "state_exporter_alert_deliveries_total",
                    receiver="alertmanager",
                    outcome="failure",
                )
                return status == 200 and counted >= 1

            wait_for(alertmanager_failed, 30, "a refused Alertmanager delivery")
            # A good reload: span export now meets a refused connection.
            write_config(f"http://127.0.0.1:{refused}/v1/traces?api-key={s['otlp-query']}", hook, headers)
            os.kill(process.pid, signal.SIGHUP)
            wait_for(lambda: "connection" in process.output().split("config reloaded")[-1], 30, "refused OTLP export")
            # A bad reload, with new secrets in the rejected values.
            write_config(
                f"http://user:{s['reload-password']}@127.0.0.1:{receiver.port}/v1/traces",
                f"hooks.example.com/x?token={s['reload-token']}",
                f'{{x-token: "{s["reload-header"]}\\r\\nX-Injected: 1"}}',
            )
            os.kill(process.pid, signal.SIGHUP)
            wait_for(lambda: "config reload rejected" in process.output(), 30, "the rejected reload")
    output = process.output()
    lines = output.splitlines()
    assert len(lines) > 20, output
    # The logged URLs are there, redacted: the test looked at the lines that matter.
    assert "api-key=***" in output and "token=***" in output and "500" in output, output
    assert "config reload rejected" in output and "traces.endpoint" in output and "credentials" in output
    for name, value in s.items():
        leaked = [line for line in lines if value in line]
        assert not leaked, f"{name} leaked: {leaked[:3]}"


def test_rejected_start_shows_no_secret(tmp_path: Path) -> None:
    """A configuration refused at start (exit 2) names the keys without echoing their secret values."""
    s = {name: secret(name) for name in ("endpoint-password", "endpoint-token", "header", "hook-token", "env-header")}
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""db: {{path: {tmp_path / "flujo.db"}}}
traces:
  enabled: true
  endpoint: 'http://user:{s["endpoint-password"]}@collector:4317?token={s["endpoint-token"]}'
  headers: {{authorization: "Bearer {s["header"]}\\n"}}
jobs:
  stuck_alerts:
    webhook: {{url: 'hooks.example.com/x?token={s["hook-token"]}'}}
"""
    )
    env = {**daemon_env(), "OTEL_EXPORTER_OTLP_HEADERS": f"x-key={s['env-header']}%0A"}
    for argv in (["run", "--config", str(config)], ["check-config", "--env", str(config)]):
        done = subprocess.run(
            [sys.executable, "-m", "exporter", *argv], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 2, done.stderr
        assert f"{config}:4: traces.endpoint:" in done.stderr and "credentials" in done.stderr
        assert f"{config}:5: traces.headers.authorization:" in done.stderr
        assert f"{config}:8: jobs.stuck_alerts.webhook.url:" in done.stderr
        assert "Traceback" not in done.stderr
        for name, value in s.items():
            assert value not in done.stdout + done.stderr, name


def test_replay_against_a_failing_receiver_logs_no_secret(fixture_copy, tmp_path: Path) -> None:
    """``state-exporter replay`` logs through the same redacting formatter as the daemon."""
    token = secret("replay-token")
    db = fixture_copy(SMALL)
    env = {**daemon_env(), "STATE_DIRECTORY": str(tmp_path / "state")}
    with FailingReceiver() as receiver:
        endpoint = f"http://127.0.0.1:{receiver.port}/v1/traces?token={token}"
        argv = ["replay", "--db", str(db), "--endpoint", endpoint, "--protocol", "http/protobuf"]
        argv += ["--no-progress", "--timezone", "UTC", "--timeout", "1s", "--log-level", "debug"]
        replay = subprocess.Popen([sys.executable, "-m", "exporter", *argv], stderr=subprocess.PIPE, text=True, env=env)
        try:
            wait_for(lambda: len(receiver.seen("/v1/traces")) >= 2, 30, "two refused requests")
        finally:
            replay.send_signal(signal.SIGTERM)
            try:
                _, output = replay.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                replay.kill()
                _, output = replay.communicate()
    assert receiver.seen("/v1/traces")[0][0].endswith(f"token={token}")  # the secret was really used
    assert f"127.0.0.1:{receiver.port}" in output  # the endpoint is logged, redacted
    assert token not in output


def test_postgres_passwords_never_logged(pg_server: PostgresServer, pg_database: str, tmp_path: Path) -> None:
    """Flujo on Postgres: a wrong password in the URL, a wrong one in db.password_file, then the right
    one from PGPASSWORD; with debug logging, nothing of any of them reaches a log line or /readyz,
    while /readyz names the problem (``auth_failed``) until the right one is used."""
    s = {name: secret(name) for name in ("url-password", "file-password", "env-password", "bad-url-password")}
    pg_server.reader_role(pg_database, "secrets_watcher", s["env-password"])
    password_file = tmp_path / "password"
    password_file.write_text(s["file-password"] + "\n")
    config = tmp_path / "config.yaml"
    base = "logging: {level: debug}\nweb: {readyz_detail: full}\nmetrics: {refresh_interval: 1s}\n"
    host = f"127.0.0.1:{pg_server.port}/{pg_database}"
    config.write_text(f"db: {{url: 'postgresql://secrets_watcher:{s['url-password']}@{host}'}}\n{base}")
    env = {**daemon_env(), "PGPASSWORD": s["env-password"]}
    bodies = []

    def readiness(expected: int, reason: str) -> bool:
        status, body = http_get(process.url + "/readyz")
        bodies.append(body)
        return status == expected and body.startswith(reason)

    with daemon(tmp_path, config, env) as process:
        wait_for(lambda: readiness(503, "auth_failed"), 30, "auth_failed with the URL's password")
        assert "password authentication failed" in bodies[-1] and "secrets_watcher" in bodies[-1]
        config.write_text(f"db: {{url: 'postgresql://secrets_watcher@{host}', password_file: {password_file}}}\n{base}")
        os.kill(process.pid, signal.SIGHUP)
        wait_for(lambda: "config reloaded" in process.output(), 30, "the reload with a password file")
        wait_for(lambda: readiness(503, "auth_failed"), 30, "auth_failed with the file's password")
        config.write_text(f"db: {{url: 'postgresql://secrets_watcher@{host}'}}\n{base}")
        os.kill(process.pid, signal.SIGHUP)
        wait_for(lambda: readiness(200, "ready"), 30, "ready with PGPASSWORD")
    rejected = tmp_path / "rejected.yaml"
    rejected.write_text(f"db: {{url: 'mysql://secrets_watcher:{s['bad-url-password']}@{host}'}}\n")
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(rejected)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2 and "db.url" in done.stderr and "postgresql://" in done.stderr, done.stderr
    output = process.output() + "\n".join(bodies) + done.stdout + done.stderr
    assert "postgresql://127.0.0.1:" in output  # the database is named, by its redacted URL
    for name, value in s.items():
        leaked = [line for line in output.splitlines() if value in line]
        assert not leaked, f"{name} leaked: {leaked[:3]}"


def test_postgres_write_role_password_never_logged(tmp_path: Path) -> None:
    """The write jobs' Postgres role (jobs.postgres.url): refused when malformed, and failing to connect
    at every run, its password shows nowhere (debug logging, check-config, the daemon's log)."""
    s = {name: secret(name) for name in ("read-password", "write-password", "bad-url-password")}
    refused = free_port()  # nothing listens: every connect fails, every run logs its error
    config = tmp_path / "config.yaml"
    good = (
        "logging: {level: debug}\n"
        f"db: {{url: 'postgresql://exporter:{s['read-password']}@127.0.0.1:{refused}/flujo'}}\n"
        "jobs:\n"
        f"  postgres: {{url: 'postgresql://exporter_jobs:{s['write-password']}@127.0.0.1:{refused}/flujo'}}\n"
        "  stale_background_tasks: {enabled: true, interval: 1s, jitter: 0s}\n"
    )
    config.write_text(good.replace("postgresql://exporter_jobs", "mysql://exporter_jobs"))
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(config)],
        capture_output=True,
        text=True,
        env=daemon_env(),
        timeout=60,
    )
    assert done.returncode == 2 and "jobs.postgres.url" in done.stderr, done.stderr
    config.write_text(good)
    with daemon(tmp_path, config, daemon_env()) as process:
        wait_for(
            lambda: (
                sample(
                    parse_exposition(http_get(process.url + "/metrics")[1]),
                    "state_exporter_job_errors_total",
                    job_name="stale_background_tasks",
                )
                >= 2
            ),
            30,
            lambda: f"two failed runs:\n{process.output()}",
        )
        log = process.output()
    assert f"127.0.0.1:{refused}/flujo" in log and "job stale_background_tasks failed" in log
    for name, value in s.items():
        assert value not in log + done.stdout + done.stderr, name
