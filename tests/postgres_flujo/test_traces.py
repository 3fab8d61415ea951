"""Span export from Flujo's Postgres backend to a real OTLP receiver: the same spans, ids and parents
as from a SQLite file holding the same rows, and nothing lost when runs commit out of order (no
rowid: discovery re-reads a created_at window, see exporter/engines/flujo/traces/pgcursor.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres import COMPUTED_AT, PostgresServer, export_to_sqlite
from support import wait_for
from traces.receiver import Receiver

from exporter.clock import ManualClock
from exporter.reader import Reader, StateReader
from exporter.reader.postgres import PostgresReader
from exporter.traces import SpanTailer, TracesConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as live:
        yield live


def tailer(receiver: Receiver, reader: Reader, state: Path, now: datetime) -> tuple[SpanTailer, ManualClock]:
    config = TracesConfig.model_validate(
        {
            "enabled": True,
            "protocol": "grpc",
            "endpoint": receiver.grpc_endpoint,
            "retry": {"initial_backoff": "10ms", "max_backoff": "50ms"},
            "timeout": "5s",
            "settle_period": "0s",
        }
    )
    clock = ManualClock(now)
    return SpanTailer(config, reader, state, clock=clock), clock


def exported(receiver: Receiver) -> dict[tuple[str, str], tuple[Any, ...]]:
    return {
        (s.trace_id, s.span_id): (s.parent_span_id, s.name, s.status_code, s.attributes.get("flujo.run_id"))
        for s in receiver.spans
    }


def test_postgres_spans_are_the_sqlite_files_spans(
    pg_server: PostgresServer, pg_database: str, tmp_path: Path, receiver: Receiver
) -> None:
    db = tmp_path / "flujo_ops.db"
    export_to_sqlite(pg_server, pg_database, db)
    results = []
    for name, reader in (
        ("postgres", PostgresReader(pg_server.exporter_url(pg_database))),
        ("sqlite", StateReader(db, naive_timezone=UTC)),
    ):
        receiver.clear()
        tail, _ = tailer(receiver, reader, tmp_path / f"state-{name}.sqlite", COMPUTED_AT)
        try:
            report = tail.run_once()
            assert not report.interrupted, name
        finally:
            tail.close()
        results.append((exported(receiver), {(s.trace_id, s.span_id): (s.start_ns, s.end_ns) for s in receiver.spans}))
    (from_postgres, pg_times), (from_sqlite, sqlite_times) = results
    assert from_postgres == from_sqlite
    assert len(from_postgres) > 150  # the finished runs' spans, at least
    span_ids = {span_id for _, span_id in from_postgres}
    assert all(parent in span_ids for parent, *_ in from_postgres.values() if parent)  # parents present
    assert pg_times == sqlite_times


def _run_with_spans(conn: psycopg.Connection, run_id: str, created: datetime) -> list[int]:
    """A finished run with a root span and one child, as flujo's save_trace writes them; the spans'
    SERIAL ids."""
    conn.execute(
        "INSERT INTO runs (run_id, pipeline_id, pipeline_name, pipeline_version, status, created_at, updated_at)"
        " VALUES (%s, 'p', 'etl_daily', '1', 'completed', %s, %s)",
        (run_id, created, created + timedelta(seconds=2)),
    )
    ids = []
    for span_id, parent, start in ((f"{run_id}-root", None, 100.0), (f"{run_id}-step", f"{run_id}-root", 100.5)):
        row = conn.execute(
            "INSERT INTO spans (run_id, span_id, parent_span_id, name, start_time, end_time, status, attributes,"
            " created_at) VALUES (%s, %s, %s, %s, %s, %s, 'completed', %s, %s) RETURNING id",
            (
                run_id,
                span_id,
                parent,
                "pipeline_run" if parent is None else "extract",
                start,
                start + 1.0,
                json.dumps({"flujo.run_id": run_id}),
                created + timedelta(seconds=2),
            ),
        ).fetchone()
        assert row is not None
        ids.append(int(row[0]))
    return ids


def test_a_run_committed_after_a_newer_one_is_not_lost(
    pg_server: PostgresServer, pg_database: str, tmp_path: Path, receiver: Receiver
) -> None:
    """Two writers: the first takes the lower SERIAL ids and the older created_at but commits after
    the second's run was exported.  Both runs arrive, each span once."""
    now = datetime.now(UTC)
    tail, clock = tailer(receiver, PostgresReader(pg_server.exporter_url(pg_database)), tmp_path / "s.sqlite", now)
    try:
        assert not tail.run_once().interrupted  # the dump's runs
        receiver.clear()
        with (
            psycopg.connect(pg_server.owner_url(pg_database)) as slow,
            psycopg.connect(pg_server.owner_url(pg_database)) as fast,
        ):
            slow_ids = _run_with_spans(slow, "run_slow", now - timedelta(seconds=20))
            fast_ids = _run_with_spans(fast, "run_fast", now - timedelta(seconds=10))
            fast.commit()
            assert max(slow_ids) < min(fast_ids)  # the lower ids commit last
            clock.advance(5)
            tail.run_once()
            assert sorted(s.attributes.get("flujo.run_id") for s in receiver.spans) == ["run_fast", "run_fast"]
            slow.commit()
        clock.advance(5)
        tail.run_once()
        clock.advance(5)
        tail.run_once()  # nothing new: nothing sent again
    finally:
        tail.close()
    runs = [s.attributes.get("flujo.run_id") for s in receiver.spans]
    assert sorted(runs) == ["run_fast", "run_fast", "run_slow", "run_slow"]
    assert len({(s.trace_id, s.span_id) for s in receiver.spans}) == 4
    parents = {s.span_id for s in receiver.spans}
    assert all(s.parent_span_id in parents for s in receiver.spans if s.parent_span_id)


def test_daemon_exports_postgres_spans(
    pg_server: PostgresServer, pg_database: str, tmp_path: Path, receiver: Receiver
) -> None:
    from postgres import EXPORTER_PASSWORD
    from processes import running_daemon

    password_file = tmp_path / "password"
    password_file.write_text(EXPORTER_PASSWORD)
    config = f"""
db: {{password_file: {password_file}}}
traces:
  enabled: true
  protocol: grpc
  endpoint: {receiver.grpc_endpoint}
  settle_period: 0s
  poll_interval: 500ms
  state_file: {tmp_path / "traces-state.sqlite"}
"""
    with running_daemon(tmp_path, "--db", pg_server.url(pg_database, "exporter"), config=config) as daemon:
        receiver.wait_for(150, timeout=30)
    assert "Traceback" not in daemon.output()
    spans = list(receiver.spans)
    assert len({s.trace_id for s in spans}) >= 40  # one trace per run with spans (55, some in progress)
    ids = {s.span_id for s in spans}
    assert all(s.parent_span_id in ids for s in spans if s.parent_span_id)


def replay_process(url: str, state: Path, receiver: Receiver, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``state-exporter replay --db postgresql://…`` in its own process (the password from PGPASSWORD)."""
    from postgres import EXPORTER_PASSWORD

    argv = [sys.executable, "-m", "exporter", "replay", "--db", url, "--state", str(state)]
    argv += ["--endpoint", receiver.grpc_endpoint, "--no-progress", "--log-level", "warning", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PGPASSWORD": EXPORTER_PASSWORD}
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def test_replays_send_identical_ids_and_a_sigkill_loses_nothing(
    pg_server: PostgresServer, pg_database: str, tmp_path: Path
) -> None:
    """Two replays of the Postgres fixture from fresh state files send the very same trace and span ids,
    every parent present; a third, SIGKILLed three times while exporting and restarted on its state
    file, ends with every one of them received."""
    url = pg_server.exporter_url(pg_database, password=None)
    log = tmp_path / "replay.log"
    with psycopg.connect(pg_server.owner_url(pg_database)) as conn:
        # 20 copies of every run with spans, under new run ids: enough requests to be killed mid-export.
        for n in range(1, 21):
            conn.execute(
                "INSERT INTO runs SELECT %s || run_id, pipeline_id, pipeline_name, pipeline_version, status,"
                " created_at, updated_at, execution_time_ms, memory_usage_mb, total_steps, error_message FROM runs"
                " WHERE run_id IN (SELECT run_id FROM spans) AND run_id NOT LIKE 'copy%%'",
                (f"copy{n}-",),
            )
            conn.execute(
                "INSERT INTO spans (run_id, span_id, parent_span_id, name, start_time, end_time, status, attributes,"
                " created_at) SELECT %s || run_id, span_id, parent_span_id, name, start_time, end_time, status,"
                " attributes, created_at FROM spans WHERE run_id NOT LIKE 'copy%%'",
                (f"copy{n}-",),
            )
        stored = conn.execute("SELECT count(*) FROM spans").fetchone()
    assert stored is not None and stored[0] == 224 * 21
    sent = []
    for n in range(2):
        with Receiver() as receiver:
            done = replay_process(url, tmp_path / f"clean-{n}.sqlite", receiver, log)
            assert done.wait(120) == 0, log.read_text()
            spans = list(receiver.spans)
        ids = {s.span_id for s in spans}
        assert all(s.parent_span_id in ids for s in spans if s.parent_span_id), "every parent present"
        sent.append({(s.trace_id, s.span_id) for s in spans})
    assert sent[0] == sent[1]
    assert len(sent[0]) >= 219 * 21  # every finished span (the unfinished ones of crashed runs may wait)

    state, rng, kills = tmp_path / "killed.sqlite", random.Random(15), 0
    with Receiver(delay_s=0.003, record_details=False) as receiver:
        while kills < 3:
            before = receiver.received()
            proc = replay_process(url, state, receiver, log, "--batch-size", "20")
            try:
                wait_for(
                    lambda p=proc, b=before: receiver.received() > b or p.poll() is not None,  # type: ignore[misc]
                    60,
                    "the replay exporting",
                )
                time.sleep(rng.uniform(0.0, 0.3))  # a random point of the export, not a controlled clock
                if proc.poll() is not None:
                    break
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            finally:
                proc.wait(10)
        assert kills == 3, f"the replay finished after {kills} kills: slow the receiver down"
        final = replay_process(url, state, receiver, log, "--batch-size", "20")
        assert final.wait(120) == 0, log.read_text()
        received = set(receiver.keys)
    assert received == sent[0], f"{len(sent[0] - received)} spans lost across {kills} SIGKILLs"
