"""The daemon stays within the Kubernetes sidecar's memory limit with hostile rows: one span with 50 MiB
of attributes and 20 000 stuck runs.  It exports the span (truncated) and delivers every alert.

The limit is read from deploy/kubernetes/deployment.yaml; the peak resident memory (``VmHWM`` of the
daemon process, what the cgroup limit acts on) must stay below it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from processes import running_daemon
from traces.flujo_db import FlujoWriter, Span, new_span_id, span_hex, trace_hex
from traces.receiver import Receiver

from exporter.engines.flujo.traces.source import TRUNCATED_KEY

ROOT = Path(__file__).resolve().parents[2]
BIG_MIB = 50
STUCK_RUNS = 20_000


def sidecar_memory_limit() -> int:
    """Bytes: the exporter container's ``resources.limits.memory`` in the Kubernetes manifest."""
    text = (ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text()
    exporter = text[text.index("state-exporter") :]
    limits = exporter[exporter.index("limits:") :]
    match = re.search(r"memory:\s*(\d+)Mi", limits)
    assert match is not None
    return int(match.group(1)) * 1024 * 1024


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


class AlertSink:
    """A minimal Alertmanager v2 API: records the run ids of posted alerts and each request's size."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.run_ids: set[str] = set()
        self.request_bytes: list[int] = []

    @contextmanager
    def serving(self) -> Iterator[str]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                alerts = json.loads(body)
                with sink.lock:
                    sink.request_bytes.append(len(body))
                    sink.run_ids.update(a["labels"]["run_id"] for a in alerts)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


def hostile_db(path: Path, now: datetime) -> tuple[str, Span, int]:
    writer = FlujoWriter(path)
    writer.conn.execute("BEGIN")
    for n in range(STUCK_RUNS):
        writer.start_run(f"stuck_{n:05d}", now - timedelta(hours=3), pipeline=f"pipeline_{n % 7}")
    writer.conn.execute("COMMIT")
    start = now - timedelta(minutes=10)
    writer.start_run("run_big", start)
    t0 = start.timestamp()
    attributes = {"initial_input": "x" * (BIG_MIB * 1024 * 1024)}
    big = Span(new_span_id(), "pipeline_root", t0, t0 + 5, "completed", None, attributes)
    writer.finish_run("run_big", "completed", start + timedelta(seconds=5))
    writer.save_spans("run_big", [big])
    size = len(json.dumps(attributes))
    writer.close()
    return "run_big", big, size


def test_daemon_stays_within_the_sidecar_memory_limit(tmp_path: Path) -> None:
    limit = sidecar_memory_limit()
    assert limit == 128 * 1024 * 1024  # the manifest's value this test was written for
    now = datetime.now(UTC)
    db = tmp_path / "flujo.db"
    run_id, big, size = hostile_db(db, now)
    sink = AlertSink()
    with Receiver() as receiver, sink.serving() as alertmanager:
        config = f"""
db:
  path: {db}
  writer_timezone: UTC
traces:
  enabled: true
  endpoint: {receiver.grpc_endpoint}
  tls:
    insecure: true
  poll_interval: 200ms
  settle_period: 0s
  start_at: beginning
  state_file: {tmp_path / "traces-state.sqlite"}
jobs:
  stuck_alerts:
    enabled: true
    interval: 2s
    jitter: 0s
    alertmanager:
      url: {alertmanager}
"""
        with running_daemon(tmp_path, config=config) as daemon:
            deadline = time.monotonic() + 90
            wanted = (trace_hex(run_id), span_hex(run_id, big.span_id))
            while time.monotonic() < deadline:
                assert daemon.proc.poll() is None, daemon.output()[-3000:]
                with sink.lock:
                    alerts_done = len(sink.run_ids) == STUCK_RUNS
                if alerts_done and wanted in receiver.keys:
                    break
                time.sleep(0.2)
            peak = peak_rss(daemon.pid)
            output = daemon.output()
    assert wanted in receiver.keys, output[-3000:]
    assert len(sink.run_ids) == STUCK_RUNS, f"{len(sink.run_ids)} alerts delivered"
    assert max(sink.request_bytes) < 1024 * 1024, "alerts go out in bounded requests"
    assert peak < limit, f"peak RSS {peak / 2**20:.0f} MiB >= the sidecar limit {limit / 2**20:.0f} MiB"
    span = receiver.by_key()[wanted]
    assert span.attributes[TRUNCATED_KEY] == size
    assert span.attributes["flujo.attributes.raw"].startswith('{"initial_input": "xxx')
    assert len(span.attributes["flujo.attributes.raw"]) <= 4096
