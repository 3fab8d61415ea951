"""Span export per target: one daemon follows two copies of the same Flujo DB (the same run ids) and a
real OTLP receiver gets every span of each, under different trace ids (each target's name is its id
namespace), each resource naming its target, each target with its own state file and metrics."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from processes import http_get, running_daemon
from support import FIXTURES, SMALL, parse_exposition, sample, wait_for
from traces.flujo_db import FlujoWriter, Span, new_span_id, stored_spans
from traces.receiver import Receiver

from exporter.traces.tailer import SOURCE_ATTRIBUTE


def salted(namespace: str, data: bytes, size: int) -> str:
    """The documented namespaced derivation, computed independently of the exporter's code."""
    return hashlib.sha256(b"\x00ns:" + namespace.encode() + b"\x00" + data).digest()[:size].hex()


def test_each_target_exports_its_spans_under_its_own_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    dbs = {}
    for name in ("east", "west"):
        dbs[name] = tmp_path / name / SMALL
        dbs[name].parent.mkdir()
        shutil.copyfile(FIXTURES / SMALL, dbs[name])
    rows = stored_spans(dbs["east"])
    with Receiver() as receiver:
        config = f"""\
db: {{writer_timezone: UTC}}
traces:
  enabled: true
  endpoint: {receiver.grpc_endpoint}
  tls: {{insecure: true}}
  settle_period: 0s
  poll_interval: 1s
targets:
  east: {{db: {{path: {dbs["east"]}}}}}
  west: {{db: {{path: {dbs["west"]}}}}}
"""
        with running_daemon(tmp_path, config=config, wait_path="/readyz") as daemon:
            wait_for(lambda: len(receiver.keys) >= 2 * len(rows), 60, "every span of both targets")

            def exported() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
                return parse_exposition(http_get(f"{daemon.url}/metrics")[1])

            wait_for(
                lambda: all(sample(exported(), "state_exporter_spans_exported_total", target=t) for t in dbs),
                15,
                "the exported counters",
            )
            own = exported()
            # A reload changing the span export restarts it per target, from its state file: nothing again.
            config_file = next(tmp_path.glob("daemon-*.yaml"))
            config_file.write_text(config.replace("poll_interval: 1s", "poll_interval: 2s"))
            os.kill(daemon.pid, signal.SIGHUP)
            wait_for(lambda: daemon.output().count("traces: exporting spans of") == 4, 15, "both exports restarted")
            late = FlujoWriter(dbs["west"], create_db=False)  # a run after the restart: proves a new cycle ran
            start = datetime.now(UTC)
            late.start_run("run_after_reload", start)
            late.save_spans(
                "run_after_reload", [Span(new_span_id(), "late", start.timestamp(), start.timestamp() + 1, "completed")]
            )
            late.finish_run("run_after_reload", "completed", start + timedelta(seconds=1))
            late.close()
            wait_for(lambda: len(receiver.keys) == 2 * len(rows) + 1, 15, "the run written after the reload")
        assert daemon.proc.returncode == 0
    assert len(receiver.keys) == 2 * len(rows) + 1 and set(receiver.keys.values()) == {1}, "each span once"
    for name in dbs:
        spans = [s for s in receiver.spans if s.resource[SOURCE_ATTRIBUTE] == name and s.name != "late"]
        assert {(s.trace_id, s.span_id) for s in spans} == {
            (
                salted(name, b"flujo-trace:" + r["run_id"].encode(), 16),
                salted(name, b"flujo-span:" + r["run_id"].encode() + b"\x00" + r["span_id"].encode(), 8),
            )
            for r in rows
        }
        assert sample(own, "state_exporter_spans_exported_total", target=name) == len(rows)
        assert sample(own, "state_exporter_component_up", target=name, component="traces") == 1
        assert sample(own, "state_exporter_component_up", target=name, component="jobs") == 0
        assert (tmp_path / "state" / f"traces-target-{name}.sqlite").is_file()
    assert not any(family == "state_exporter_component_up" and "target" not in dict(labels) for family, labels in own)
