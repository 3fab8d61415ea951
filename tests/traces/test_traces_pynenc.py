"""pynenc's rebuilt traces, from its real fixture DBs to a real OTLP receiver over gRPC and HTTP: one
trace per top-level invocation, every parent present, ERROR with the exception on failures, one event
per history row, ids from the invocation ids alone, each span once across restarts and replays.

The ground truth is each fixture's ``expected.json`` (computed by an independent oracle and
cross-checked with pynenc's own API) and the fixture's own rows, read here with plain SQL.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from engines.cases import PYNENC_FIXTURES, pynenc_expected
from traces.conftest import make_config
from traces.receiver import ReceivedSpan, Receiver

from exporter.reader import StateReader
from exporter.traces import ids, replay

DAY = 86400.0
FINAL = ("success", "failed", "concurrency_controlled_final")


def trace_hex(top: str) -> str:
    return hashlib.sha256(b"pynenc-trace:" + top.encode()).digest()[:16].hex()


def span_hex(invocation_id: str) -> str:
    return hashlib.sha256(b"pynenc-span:" + invocation_id.encode()).digest()[:8].hex()


def fixture_rows(db: Path, prefix: str) -> dict[str, dict[str, Any]]:
    """Per invocation: parent, task, current status, history rows, exception (plain SQL on the file)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows: dict[str, dict[str, Any]] = {}
        for invocation_id, parent, task in conn.execute(
            f'SELECT invocation_id, parent_invocation_id, task_id_key FROM "{prefix}state_backend_invocations"'
        ):
            rows[invocation_id] = {"parent": parent, "task": task, "history": [], "exception": None}
        for invocation_id, status in conn.execute(
            f'SELECT invocation_id, status FROM "{prefix}orchestrator_invocations"'
        ):
            rows[invocation_id]["status"] = status
        for invocation_id, at, status, data in conn.execute(
            "SELECT invocation_id, history_timestamp, history_status, history_json"
            f' FROM "{prefix}state_backend_history" ORDER BY history_timestamp, rowid'
        ):
            record = json.loads(data)
            runner = record["status_record"]["runner_id"] or record["runner_context_id"]
            rows[invocation_id]["history"].append((at, status, runner))
        for invocation_id, data in conn.execute(
            f'SELECT invocation_id, exception_data FROM "{prefix}state_backend_exceptions"'
        ):
            rows[invocation_id]["exception"] = json.loads(data)["error_name"]
    finally:
        conn.close()
    return rows


def top_of(rows: dict[str, dict[str, Any]], invocation_id: str) -> str:
    while rows[invocation_id]["parent"] is not None:
        invocation_id = rows[invocation_id]["parent"]
    return invocation_id


def check_traces(spans: list[ReceivedSpan], db: Path, fixture: str, protocol: str) -> None:
    _, prefix = PYNENC_FIXTURES[fixture]
    truth = pynenc_expected(fixture)["apps"][0]
    rows = fixture_rows(db, prefix)
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    assert len(by_id) == len(spans) == truth["invocations_total"] == len(rows), "every invocation once"
    assert {s.resource["service.name"] for s in spans} == {"pynenc"}  # traces.service_name unset: the engine's
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == sum(truth["status_counts_top_level"].values())
    assert len({s.trace_id for s in spans}) == len(roots), "one root per trace"
    for span in spans:  # every parent present, in the same trace
        assert not span.parent_span_id or (span.trace_id, span.parent_span_id) in by_id
    for invocation_id, row in rows.items():
        span = by_id[(trace_hex(top_of(rows, invocation_id)), span_hex(invocation_id))]
        assert span.transport == protocol.split("/")[0]
        assert span.name == row["task"] and span.kind == 1
        assert span.parent_span_id == (span_hex(row["parent"]) if row["parent"] else "")
        assert span.attributes["pynenc.invocation_id"] == invocation_id
        assert span.attributes["pynenc.status"] == row["status"]
        history = row["history"]
        registered = [at for at, status, _ in history if status == "registered"]
        assert span.start_ns == ids_nanos(registered[0] if registered else history[0][0])
        finals = [at for at, status, _ in history if status in FINAL]
        if finals:
            assert span.end_ns == ids_nanos(finals[0])
            assert "pynenc.exporter.end_time_inferred" not in span.attributes
        else:
            assert span.attributes["pynenc.exporter.end_time_inferred"] is True
            assert span.end_ns == ids_nanos(history[-1][0])  # never finished: its latest transition
        transitions = [e for e in span.events if e.name != "exception"]
        assert [(e.time_ns, e.name, e.attributes.get("pynenc.runner_id")) for e in transitions] == [
            (ids_nanos(at), status, runner) for at, status, runner in history
        ]
        assert span.attributes["pynenc.attempts"] == sum(1 for _, status, _ in history if status == "running")
        if row["status"] == "success":
            assert (span.status_code, span.status_message) == (1, "")
        elif row["status"] == "failed":
            assert span.status_code == 2 and span.status_message.startswith(f"{row['exception']}: ")
            [exception] = [e for e in span.events if e.name == "exception"]
            assert exception.attributes["exception.type"] == row["exception"]
            assert span.status_message == f"{row['exception']}: {exception.attributes['exception.message']}"
        else:
            assert (span.status_code, span.status_message) == (0, "")
        if row["parent"] is None:
            assert span.attributes["pynenc.app"] == "seed_app"
    failures = Counter(s.status_message.split(":")[0] for s in spans if s.status_code == 2)
    assert failures == Counter(truth["exceptions_by_error_name"])
    assert sum(len([e for e in s.events if e.name != "exception"]) for s in spans) == truth["history_rows"]
    for tree in truth["traces_with_children"]:  # the oracle's trees, parent by parent
        check_tree(by_id, trace_hex(tree["invocation_id"]), tree, "")


def check_tree(by_id: dict[tuple[str, str], ReceivedSpan], trace: str, node: dict[str, Any], parent: str) -> None:
    span = by_id[(trace, span_hex(node["invocation_id"]))]
    assert (span.parent_span_id, span.name, span.attributes["pynenc.status"]) == (parent, node["task"], node["status"])
    for child in node["children"]:
        check_tree(by_id, trace, child, span.span_id)


def ids_nanos(seconds: float) -> int:
    whole = int(seconds)
    return whole * 1_000_000_000 + round((seconds - whole) * 1e9)


def fixture_now(fixture: str) -> datetime:
    return datetime.fromisoformat(pynenc_expected(fixture)["computed_at_utc"])


every_fixture = pytest.mark.parametrize("fixture", list(PYNENC_FIXTURES))
both_protocols = pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])


@every_fixture
@both_protocols
def test_tailer_exports_every_tree(fixture_copy, make_tailer, receiver: Receiver, fixture: str, protocol: str) -> None:
    db = fixture_copy(fixture)
    truth = pynenc_expected(fixture)["apps"][0]
    tailer, clock = make_tailer(db, fixture_now(fixture), protocol)
    first = tailer.run_once()
    tops = truth["status_counts_top_level"]
    assert not first.interrupted and first.discovered == sum(tops.values())
    unfinished = sum(n for status, n in tops.items() if status not in FINAL)
    assert first.runs_completed == sum(tops.values()) - unfinished, "finished trees at once, the others wait"
    assert tailer.backlog()[1] == unfinished
    clock.advance(8 * DAY)  # past abandon_after: trees that never finish go out as they are
    assert tailer.run_once().runs_completed == unfinished
    assert tailer.run_once().exported == 0 and tailer.backlog() == (0, 0)
    check_traces(receiver.spans, db, fixture, protocol)


@every_fixture
@both_protocols
def test_replay_sends_what_the_tailer_sends(fixture_copy, tmp_path: Path, fixture: str, protocol: str) -> None:
    db = fixture_copy(fixture)
    keys = []
    for n in range(2):  # two replays (separate state files): the very same ids
        with Receiver() as receiver:
            result = replay(make_config(receiver, protocol), StateReader(db, naive_timezone=UTC), tmp_path / f"{n}.db")
            assert result.complete and result.supported and result.spans_dead_lettered == 0
            assert result.runs == sum(pynenc_expected(fixture)["apps"][0]["status_counts_top_level"].values())
            check_traces(receiver.spans, db, fixture, protocol)
            keys.append(set(receiver.keys))
    assert keys[0] == keys[1]


def test_replay_resumes_and_filters(fixture_copy, tmp_path: Path, receiver: Receiver) -> None:
    fixture = "pynenc/pynenc-0.4.0-sample.db"
    db = fixture_copy(fixture)
    state = tmp_path / "replay.sqlite"
    config = make_config(receiver, batch_size=1)
    first = replay(config, StateReader(db, naive_timezone=UTC), state)
    assert first.complete and first.spans_exported == 17
    again = replay(config, StateReader(db, naive_timezone=UTC), state)
    assert again.complete and again.spans_exported == 0, "a finished replay is not repeated"
    receiver.clear()
    fanout = "3c0d6a5f-99d4-4cda-b4e2-7686f18b5eac"
    only = replay(config, StateReader(db, naive_timezone=UTC), state, run_id=fanout)
    assert only.spans_exported == 4 and {s.trace_id for s in receiver.spans} == {trace_hex(fanout)}
    receiver.clear()
    since = fixture_now(fixture) - timedelta(days=1)
    recent = replay(config, StateReader(db, naive_timezone=UTC), state, since=since)
    assert recent.spans_exported == 15, "the two back-dated invocations are older than a day"


def test_daemon_restart_sends_nothing_twice(fixture_copy, make_tailer, receiver: Receiver, tmp_path: Path) -> None:
    fixture = "pynenc/pynenc-0.1.1-sample.db"
    db = fixture_copy(fixture)
    state = tmp_path / "tail.sqlite"
    tailer, _ = make_tailer(db, fixture_now(fixture), state=state)
    assert tailer.run_once().exported == 18
    tailer.close()
    restarted, clock = make_tailer(db, fixture_now(fixture), state=state)
    assert restarted.run_once().exported == 0 and restarted.run_once().discovered == 0
    clock.advance(8 * DAY)
    assert restarted.run_once().exported == 3
    assert restarted.run_once().exported == 0
    assert set(receiver.keys.values()) == {1} and len(receiver.keys) == 21
    tops = _tops(db, "seed_app_d000b1ab__")
    assert restarted.exported_run_ids([*tops, "nobody"]) == {*tops, "nobody"}


def _tops(db: Path, prefix: str) -> set[str]:
    rows = fixture_rows(db, prefix)
    return {i for i, row in rows.items() if row["parent"] is None}


def test_partial_tree_then_the_rest(fixture_copy, make_tailer, receiver: Receiver) -> None:
    """A workflow still running past the grace period: its finished children go out, and once it
    finishes only the workflow's own span follows."""
    fixture = "pynenc/pynenc-0.4.0-sample.db"
    db = fixture_copy(fixture)
    prefix = "seed_app_d000b1ab__"
    workflow = "b1c1a2be-6962-4776-b6ec-9afc774208bd"
    conn = sqlite3.connect(db)
    final = conn.execute(
        f'SELECT history_timestamp, history_status, history_json FROM "{prefix}state_backend_history"'
        " WHERE invocation_id = ? AND history_status = 'success'",
        (workflow,),
    ).fetchone()
    conn.execute(
        f'DELETE FROM "{prefix}state_backend_history" WHERE invocation_id = ? AND history_status = ?',
        (workflow, "success"),
    )
    conn.execute(
        f"UPDATE \"{prefix}orchestrator_invocations\" SET status = 'running' WHERE invocation_id = ?", (workflow,)
    )
    conn.commit()
    tailer, clock = make_tailer(db, fixture_now(fixture), grace_period="1h", abandon_after="7d")
    tailer.run_once()
    assert trace_hex(workflow) not in {s.trace_id for s in receiver.spans}, "within the grace period: waits"
    clock.advance(2 * 3600)
    tailer.run_once()
    partial = {s.span_id for s in receiver.spans if s.trace_id == trace_hex(workflow)}
    assert len(partial) == 2 and span_hex(workflow) not in partial, "the finished children only"
    assert tailer.run_once().exported == 0, "unchanged: not read again"
    conn.execute(
        f'INSERT INTO "{prefix}state_backend_history" (invocation_id, history_timestamp, history_status, history_json)'
        " VALUES (?, ?, ?, ?)",
        (workflow, *final),
    )
    conn.execute(
        f"UPDATE \"{prefix}orchestrator_invocations\" SET status = 'success' WHERE invocation_id = ?", (workflow,)
    )
    conn.commit()
    conn.close()
    assert tailer.run_once().exported == 1
    assert set(receiver.keys.values()) == {1}
    assert ids.pynenc_span_id(workflow).hex() == span_hex(workflow)


def test_state_file_per_engine(fixture_copy, make_tailer, receiver: Receiver, tmp_path: Path) -> None:
    """Flujo's state keeps the format of earlier releases (the rowid mark, bound to the DB path); a
    pynenc file replacing the DB at that path starts the state over with its own cursor."""
    from support import SMALL, computed_at

    flujo = fixture_copy(SMALL)
    state = tmp_path / "tail.sqlite"
    tailer, _ = make_tailer(flujo, computed_at(SMALL), state=state)
    assert tailer.run_once().discovered == 60
    meta = dict(query(state, "SELECT key, value FROM meta"))
    [(top,)] = query(flujo, "SELECT MAX(rowid) FROM runs")
    assert (meta["runs_hwm"], meta["source"]) == (str(top), str(flujo.resolve()))
    fixture = "pynenc/pynenc-0.4.0-sample.db"
    flujo.unlink()
    flujo.write_bytes(fixture_copy(fixture).read_bytes())  # another engine's file at the same path
    receiver.clear()
    report = tailer.run_once()
    assert report.discovered == 12 and report.exported == 14
    meta = dict(query(state, "SELECT key, value FROM meta"))
    [(last_top,)] = query(
        flujo,
        'SELECT MAX(rowid) FROM "seed_app_d000b1ab__state_backend_invocations" WHERE parent_invocation_id IS NULL',
    )
    assert json.loads(meta["runs_hwm"]) == {"seed_app_d000b1ab__": last_top}
    assert meta["source"] == f"pynenc:{flujo.resolve()}"
    assert {s.trace_id for s in receiver.spans} <= {trace_hex(t) for t in _tops(flujo, "seed_app_d000b1ab__")}


def query(db: Path, sql: str) -> list[Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_interrupted_replay_resumes(fixture_copy, tmp_path: Path) -> None:
    """Halted mid-way, a replay continues after the last tree wholly accepted: every span arrives,
    and only the trees of the batches in flight come twice (with the same ids)."""
    import threading

    db = fixture_copy("pynenc/pynenc-0.1.0-sample.db")
    state = tmp_path / "replay.sqlite"
    with Receiver(delay_s=0.02) as receiver:
        config = make_config(receiver, batch_size=1)
        halt = threading.Event()
        results = []
        worker = threading.Thread(
            target=lambda: results.append(replay(config, StateReader(db, naive_timezone=UTC), state, halt=halt))
        )
        worker.start()
        receiver.wait_for(8)
        halt.set()
        worker.join(30)
        assert not results[0].complete and 8 <= results[0].spans_exported < 21
        rest = replay(config, StateReader(db, naive_timezone=UTC), state)
        assert rest.complete and rest.resumed
        assert len(receiver.keys) == 21, "every invocation arrived"
        again = sum(n - 1 for n in receiver.keys.values())
        assert again <= 4, "at most the largest tree (a fan-out of 3 and its parent) again"
