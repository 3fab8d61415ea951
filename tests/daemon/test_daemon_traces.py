"""The daemon with `traces.enabled`: a real OTLP receiver gets every finished run's spans; replay CLI."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from processes import daemon_env, http_get, running_daemon
from support import SMALL, parse_exposition, sample
from traces.receiver import Receiver


def finished_run_spans(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(
            conn.execute(
                "SELECT COUNT(*) FROM spans s JOIN workflow_state w ON w.run_id = s.run_id"
                " WHERE w.status IN ('completed', 'failed', 'cancelled')"
            ).fetchone()[0]
        )
    finally:
        conn.close()


def test_daemon_exports_spans_over_grpc(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(SMALL)
    expected_at_least = finished_run_spans(db)
    with Receiver() as receiver:
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
  state_file: {tmp_path / "traces-state.sqlite"}
"""
        with running_daemon(tmp_path, config=config) as daemon:
            receiver.wait_for(expected_at_least, timeout=30)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                s = parse_exposition(http_get(daemon.url + "/metrics")[1])
                if sample(s, "state_exporter_spans_exported_total") >= expected_at_least:
                    break
                time.sleep(0.2)
            assert sample(s, "state_exporter_spans_exported_total") >= expected_at_least
    assert (tmp_path / "traces-state.sqlite").exists()


def replayed(db: Path, state: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``state-exporter replay`` of ``db`` as a process, with ``flags`` (endpoint, protocol, ...)."""
    argv = [sys.executable, "-m", "exporter", "replay", "--db", str(db), "--state", str(state), "--no-progress"]
    return subprocess.run([*argv, *flags], capture_output=True, text=True, timeout=120, env=daemon_env())


def test_replay_subcommand(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(SMALL)
    with Receiver() as receiver:
        flags = ("--endpoint", receiver.grpc_endpoint, "--insecure", "--timezone", "UTC")
        result = replayed(db, tmp_path / "s.sqlite", *flags)
        assert result.returncode == 0, result.stderr
        assert receiver.received() == 199  # every stored span of the fixture, finished or not


PYNENC = "pynenc/pynenc-0.4.0-sample.db"


def finished_only_config(db: Path, receiver: Receiver, state: Path) -> str:
    """Span export of ``db`` where units that never finish wait for ten years: only finished ones go out
    (pynenc's fixture: the 14 invocations of finished trees)."""
    return f"""
db:
  path: {db}
traces:
  enabled: true
  endpoint: {receiver.grpc_endpoint}
  tls:
    insecure: true
  poll_interval: 200ms
  settle_period: 0s
  grace_period: 3650d
  abandon_after: 3650d
  state_file: {state}
"""


def test_daemon_exports_pynenc_traces_once_across_a_restart(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(PYNENC)
    state = tmp_path / "traces-state.sqlite"
    with Receiver() as receiver:
        with running_daemon(tmp_path, config=finished_only_config(db, receiver, state)) as daemon:
            receiver.wait_for(14, timeout=30)
            s = parse_exposition(http_get(daemon.url + "/metrics")[1])
            assert sample(s, "state_exporter_span_export_supported") == 1
        with running_daemon(tmp_path, config=finished_only_config(db, receiver, state)):
            time.sleep(2.0)  # ten polls of the restarted daemon (a process: no clock to drive)
        assert set(receiver.keys.values()) == {1} and len(receiver.keys) == 14
        roots = [span for span in receiver.spans if not span.parent_span_id]
        assert len({span.trace_id for span in receiver.spans}) == len(roots) == 9


def test_replay_subcommand_pynenc(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(PYNENC)
    with Receiver() as receiver:
        flags = ("--engine", "pynenc", "--endpoint", receiver.http_endpoint, "--protocol", "http/protobuf")
        result = replayed(db, tmp_path / "s.sqlite", *flags)
        assert result.returncode == 0, result.stderr
        assert receiver.received() == 17 and "complete" in result.stdout  # every invocation, finished or not
