"""Collector outage: the receiver goes away while runs keep finishing, and comes back: nothing is lost and
the exporter's memory stays flat meanwhile."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from traces.flujo_db import FlujoWriter, build_large, span_hex, stored_spans, trace_hex, typical_run
from traces.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
BATCH = 100


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_outage_loses_nothing_and_memory_stays_bounded(tmp_path: Path, protocol: str) -> None:
    db = tmp_path / "flujo.db"
    build_large(db, 15_000, start=datetime.now(UTC) - timedelta(days=2))
    config = tmp_path / "config.yaml"
    config.write_text("traces:\n  retry:\n    initial_backoff: 50ms\n    max_backoff: 300ms\n")
    log = tmp_path / "tail.log"
    with Receiver(record_details=False) as receiver:
        endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
        argv = [sys.executable, "-m", "exporter.traces", "tail", "--db", str(db), "--state", str(tmp_path / "s.db")]
        argv += ["--config", str(config), "--endpoint", endpoint, "--protocol", protocol, "--batch-size", str(BATCH)]
        argv += ["--poll-interval", "100ms", "--settle-period", "500ms", "--log-level", "info"]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)}
            )
        try:
            wait(lambda: receiver.received() >= 3000, 30, "export did not start")
            receiver.stop()  # the collector goes away mid-stream
            at_outage = rss_kib(proc.pid)
            peak = at_outage
            writer = FlujoWriter(db, create_db=False)
            rng = random.Random(4)
            started = time.monotonic()
            added = 0
            while time.monotonic() - started < 3.0:  # flujo keeps finishing runs meanwhile
                begin = datetime.now(UTC) - timedelta(minutes=1)
                for _ in range(50):
                    run_id = f"run_late_{added:05d}"
                    writer.start_run(run_id, begin)
                    spans, end = typical_run(rng, begin)
                    writer.finish_run(run_id, "completed", end)
                    writer.save_spans(run_id, spans)
                    added += 1
                peak = max(peak, rss_kib(proc.pid))
                time.sleep(0.05)
            writer.close()
            in_outage = receiver.received()
            assert proc.poll() is None, log.read_text()
            receiver.start()  # the collector comes back on the same ports
            wanted = {(trace_hex(r["run_id"]), span_hex(r["run_id"], r["span_id"])) for r in stored_spans(db)}
            wait(lambda: len(receiver.keys) >= len(wanted), 60, f"only {len(receiver.keys)} of {len(wanted)}")
            peak = max(peak, rss_kib(proc.pid))
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(15)
        assert proc.returncode == 0, log.read_text()
        received = dict(receiver.keys)
    duplicates = sum(received.values()) - len(received)
    growth_mib = (peak - at_outage) / 1024
    print(
        f"\noutage ({protocol}): {len(wanted)} spans ({added} runs added during the outage), {in_outage} received"
        f" before it; RSS {at_outage / 1024:.1f} MiB at the outage, peak {peak / 1024:.1f} MiB"
        f" (+{growth_mib:.1f}); {duplicates} duplicates"
    )
    assert set(received) == wanted, "nothing lost"
    assert duplicates <= BATCH, "at most the batch in flight when the collector went away"
    assert growth_mib < 16, "memory stays bounded during the outage"
    assert "failed" in log.read_text() and "works again" in log.read_text()
