"""seeknal's rebuilt traces, from its real fixture (the DatabaseStateBackend DB and the ``target/``
directory ``seeknal run`` writes) to a real OTLP receiver over gRPC and HTTP: one trace per run, a
span per node executed in it (never a row carried over), every parent present, ERROR with seeknal's
error text on failed nodes, ids from the run and node ids alone, each span once across restarts and
replays.

The ground truth is the fixture's ``expected.json`` (an independent oracle, cross-checked with
seeknal's API: which nodes each run executed, their starts and ends in UTC, the errors) and the
fixture's own rows, read here with plain SQL and JSON.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from engines.cases import SEEKNAL_FIXTURE, pynenc_expected
from processes import daemon_env
from support import FIXTURES
from traces.conftest import make_config
from traces.receiver import ReceivedSpan, Receiver

from exporter.clock import ManualClock
from exporter.reader import StateReader
from exporter.traces import SpanTailer, replay

BERLIN = ZoneInfo("Europe/Berlin")  # the writer's zone (the expected JSON's writer_tz)
TARGET = "seeknal/seeknal-2.13.0-sample.target"
DAY = 86400.0
NOW = datetime.fromisoformat(pynenc_expected(SEEKNAL_FIXTURE)["computed_at_utc"])
CRASHED = "20261205_080138"  # its transform.customer_totals is left running: the run never finishes


def trace_hex(run_id: str) -> str:
    return hashlib.sha256(b"seeknal-trace:" + run_id.encode()).digest()[:16].hex()


def span_hex(run_id: str, node_id: str | None = None) -> str:
    data = b"seeknal-span:" + run_id.encode() + (b"" if node_id is None else b"\x00" + node_id.encode())
    return hashlib.sha256(data).digest()[:8].hex()


def ns(utc: str) -> int:
    at = datetime.fromisoformat(utc)
    return ((at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)) * 1000


def truth(backend: str) -> dict[str, Any]:
    section: dict[str, Any] = pynenc_expected(SEEKNAL_FIXTURE)[
        "database_backend" if backend == "db" else "file_backend"
    ]
    return section


def stored_details(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(run, node) -> hash and metadata, from the file itself (plain SQL, or the JSON files)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    if path.is_dir():
        for file in path.iterdir():
            state = json.loads(file.read_text())
            for node_id, node in state["nodes"].items():
                found[(state["run_id"], node_id)] = {"hash": node["hash"], "metadata": node["metadata"]}
        return found
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for run_id, node_id, node_hash, metadata in conn.execute(
            "SELECT run_id, node_id, hash, metadata_json FROM node_state"
        ):
            found[(run_id, node_id)] = {"hash": node_hash, "metadata": json.loads(metadata) if metadata else None}
    finally:
        conn.close()
    return found


def check_traces(spans: list[ReceivedSpan], path: Path, backend: str, protocol: str = "grpc") -> None:
    expected = truth(backend)
    details = stored_details(path)
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    executed = [row for row in expected["node_rows"] if row["executed_in_run"]]
    assert (
        len(by_id)
        == len(spans)
        == expected["runs_total"] + len(executed)
        == expected["executed_node_rows"] + len(expected["runs"])
    ), "a span per run and per executed node, each once"
    assert {s.resource["service.name"] for s in spans} == {"seeknal"}
    assert {s.transport for s in spans} == {protocol.split("/")[0]}
    for span in spans:  # every parent present, in the same trace
        assert not span.parent_span_id or (span.trace_id, span.parent_span_id) in by_id
    for run in expected["runs"]:
        run_id = run["run_id"]
        root = by_id[(trace_hex(run_id), span_hex(run_id))]
        rows = [row for row in executed if row["run_id"] == run_id]
        assert sorted(row["node_id"] for row in rows) == sorted(run["executed_nodes"])
        assert (root.name, root.parent_span_id, root.kind) == ("seeknal run", "", 1)
        assert root.start_ns == min(ns(row["start_utc"]) for row in rows)
        assert root.end_ns == max(ns(row["last_run_utc"]) for row in rows)
        assert root.end_ns - root.start_ns == round(run["executed_span_seconds"] * 1e9)
        assert root.attributes["seeknal.run_id"] == run_id
        assert root.attributes["seeknal.status"] == run["derived_status"]
        assert root.attributes["seeknal.nodes_executed"] == len(rows)
        assert root.status_code == {"success": 1, "failed": 2, "running": 0}[run["derived_status"]]
        children = [s for s in spans if s.trace_id == root.trace_id and s.parent_span_id]
        assert len(children) == len(rows), "carried-over, cached, skipped and pending rows are no spans"
        for row in rows:
            span = by_id[(root.trace_id, span_hex(run_id, row["node_id"]))]
            assert (span.name, span.parent_span_id, span.kind) == (row["node_id"], root.span_id, 1)
            assert (span.start_ns, span.end_ns) == (ns(row["start_utc"]), ns(row["last_run_utc"]))
            assert span.attributes["seeknal.node_id"] == row["node_id"]
            assert span.attributes["seeknal.kind"] == row["kind"]
            assert span.attributes["seeknal.status"] == row["status"]
            assert span.attributes["seeknal.row_count"] == row["row_count"]
            assert span.attributes["seeknal.duration_ms"] == row["duration_ms"]
            stored = details[(run_id, row["node_id"])]
            assert span.attributes.get("seeknal.hash") == (stored["hash"] or None)
            if row["status"] == "failed":
                error = stored["metadata"]["error"]
                assert error.startswith(row["error"])
                assert (span.status_code, span.status_message) == (2, error)
                [event] = span.events
                assert (event.name, event.time_ns, event.attributes) == (
                    "exception",
                    span.end_ns,
                    {"exception.message": error},
                )
            elif row["status"] == "success":
                assert (span.status_code, span.status_message) == (1, "")
            else:  # the crashed run's node: no end of its own
                assert span.status_code == 0 and span.attributes["seeknal.exporter.end_time_inferred"] is True
    failures = [s for s in spans if s.status_code == 2 and s.parent_span_id]
    assert len(failures) == expected["failed_executions_total"]


@pytest.fixture
def seeknal_copy(tmp_path: Path) -> Callable[[str], Path]:
    """``db`` or ``target``: a copy of that fixture (the target/ directory with its backups)."""

    def copy(backend: str) -> Path:
        if backend == "db":
            db = tmp_path / "state.db"
            shutil.copyfile(FIXTURES / SEEKNAL_FIXTURE, db)
            return db
        target = tmp_path / "target"
        shutil.copytree(FIXTURES / TARGET, target)
        return target

    return copy


@pytest.fixture
def tailers(tmp_path: Path, receiver: Receiver) -> Iterator[Callable[..., tuple[SpanTailer, ManualClock]]]:
    made: list[SpanTailer] = []

    def make(path: Path, protocol: str = "grpc", state: Path | None = None) -> tuple[SpanTailer, ManualClock]:
        clock = ManualClock(NOW)
        tailer = SpanTailer(
            make_config(receiver, protocol),
            StateReader(path, naive_timezone=BERLIN),
            state or tmp_path / f"state-{len(made)}.sqlite",
            clock=clock,
        )
        made.append(tailer)
        return tailer, clock

    yield make
    for tailer in made:
        tailer.close()


both_backends = pytest.mark.parametrize("backend", ["db", "target"])
both_protocols = pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])


@both_backends
@both_protocols
def test_tailer_exports_every_run(seeknal_copy, tailers, receiver: Receiver, backend: str, protocol: str) -> None:
    path = seeknal_copy(backend)
    expected = truth(backend)
    tailer, clock = tailers(path, protocol)
    first = tailer.run_once()
    running = expected["runs_by_derived_status"].get("running", 0)
    assert not first.interrupted and first.discovered == expected["runs_total"]
    assert first.runs_completed == expected["runs_total"] - running, "finished runs at once, the crashed one waits"
    if running:
        # Past the grace period (it crashed 2 h ago): its finished node only, not the run nor the running node.
        partial = {s.span_id for s in receiver.spans if s.trace_id == trace_hex(CRASHED)}
        assert partial == {span_hex(CRASHED, "source.orders")}
        clock.advance(8 * DAY)  # past abandon_after: the crashed run goes out as it is
        assert tailer.run_once().runs_completed == running
    assert tailer.run_once().exported == 0 and tailer.backlog() == (0, 0)
    check_traces(receiver.spans, path, backend, protocol)


@both_backends
@both_protocols
def test_two_replays_send_the_same_ids(seeknal_copy, tmp_path: Path, backend: str, protocol: str) -> None:
    path = seeknal_copy(backend)
    keys = []
    for n in range(2):  # two replays (separate state files): the very same ids
        with Receiver() as receiver:
            result = replay(
                make_config(receiver, protocol), StateReader(path, naive_timezone=BERLIN), tmp_path / f"{n}"
            )
            assert result.complete and result.supported and result.spans_dead_lettered == 0
            assert result.runs == truth(backend)["runs_total"]
            check_traces(receiver.spans, path, backend, protocol)
            keys.append(set(receiver.keys))
    assert keys[0] == keys[1]


def replay_command(path: Path, state: Path, receiver: Receiver, protocol: str) -> None:
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    argv = [sys.executable, "-m", "exporter", "replay", "--db", str(path), "--state", str(state)]
    argv += ["--endpoint", endpoint, "--protocol", protocol, "--insecure", "--no-progress"]
    argv += ["--timezone", "Europe/Berlin"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=daemon_env())
    assert done.returncode == 0, done.stderr


@both_backends
def test_state_exporter_replay_twice_sends_the_same_ids(seeknal_copy, tmp_path: Path, backend: str) -> None:
    """``state-exporter replay`` (the command), twice with separate state files, over gRPC then HTTP."""
    path = seeknal_copy(backend)
    sent = []
    for n, protocol in enumerate(("grpc", "http/protobuf")):
        with Receiver() as receiver:
            replay_command(path, tmp_path / f"{n}.sqlite", receiver, protocol)
            check_traces(receiver.spans, path, backend, protocol)
            sent.append(dict(receiver.keys))
    assert sent[0] == sent[1] and set(sent[0].values()) == {1}


def test_the_file_and_the_db_backend_give_one_run_the_same_ids(seeknal_copy, tmp_path: Path) -> None:
    """The same run stored by either backend is the same trace (its ids come from its run and node ids)."""
    sent = []
    for backend in ("db", "target"):
        with Receiver() as receiver:
            replay(
                make_config(receiver),
                StateReader(seeknal_copy(backend), naive_timezone=BERLIN),
                tmp_path / f"{backend}.sqlite",
            )
            sent.append({(s.trace_id, s.span_id): (s.start_ns, s.end_ns) for s in receiver.spans})
    shared = {trace_hex(run["run_id"]) for run in truth("target")["runs"]}
    assert {k: v for k, v in sent[0].items() if k[0] in shared} == sent[1]


def test_naive_times_are_read_in_the_writer_zone(seeknal_copy, tmp_path: Path) -> None:
    """The same rows read as UTC instead of Europe/Berlin (UTC+1 in December): every span an hour later."""
    db = seeknal_copy("db")
    starts = []
    for n, zone in enumerate((BERLIN, ZoneInfo("UTC"))):
        with Receiver() as receiver:
            replay(make_config(receiver), StateReader(db, naive_timezone=zone), tmp_path / f"{n}.sqlite")
            starts.append({(s.trace_id, s.span_id): s.start_ns for s in receiver.spans})
    assert starts[0].keys() == starts[1].keys()
    assert {starts[1][k] - starts[0][k] for k in starts[0]} == {3600 * 10**9}


def save_state(target: Path, content: bytes, backup_as: str | None) -> None:
    """seeknal 2.13.0's save_state: the current file copied to ``run_state.json.bak.<new run_id>``, the new
    state written to ``run_state.tmp`` and renamed over ``run_state.json``."""
    main = target / "run_state.json"
    if backup_as is not None and main.exists():
        shutil.copy2(main, target / f"run_state.json.bak.{backup_as}")
    temp = main.with_suffix(".tmp")
    temp.write_bytes(content)
    temp.replace(main)


def next_run(target: Path, run_id: str, at: datetime) -> bytes:
    """A run after the sample's last one: every node re-executed successfully at ``at`` (writer's local time)."""
    state = json.loads((target / "run_state.json").read_text())
    local = at.astimezone(BERLIN).replace(tzinfo=None)
    state["run_id"], state["last_run"] = run_id, local.isoformat()
    for n, node in enumerate(state["nodes"].values()):
        node["last_run"] = (local + timedelta(milliseconds=100 * (n + 1))).isoformat()
        node["status"], node["duration_ms"] = "success", 100
    return json.dumps(state, indent=2).encode()


def test_each_saved_run_once_across_a_restart(seeknal_copy, tailers, receiver: Receiver, tmp_path: Path) -> None:
    """target/: the backups and the current file are one run each; a restart sends nothing again; a
    run saved the way seeknal saves it (backup, then rename) is exported once, and its backup (the run
    it replaced) is not a new run."""
    target = seeknal_copy("target")
    state = tmp_path / "tail.sqlite"
    tailer, _ = tailers(target, state=state)
    assert tailer.run_once().exported == 11
    tailer.close()
    restarted, _ = tailers(target, state=state)
    assert restarted.run_once().exported == 0 and restarted.run_once().discovered == 0
    run_id = "20261205_101500"
    save_state(target, next_run(target, run_id, NOW), backup_as=run_id)
    report = restarted.run_once()
    assert (report.discovered, report.exported) == (1, 4)
    assert restarted.run_once().exported == 0
    restarted.close()
    again, _ = tailers(target, state=state)
    assert again.run_once().exported == 0
    assert set(receiver.keys.values()) == {1} and len(receiver.keys) == 15
    runs = [run["run_id"] for run in truth("target")["runs"]]
    assert {s.trace_id for s in receiver.spans} == {trace_hex(r) for r in (*runs, run_id)}
    meta = dict(query(state, "SELECT key, value FROM meta"))
    assert meta["runs_hwm"] == f"run_id:{run_id}" and meta["source"] == f"seeknal:{target.resolve()}"


def test_db_cursor_is_the_rowid(seeknal_copy, tailers, receiver: Receiver, tmp_path: Path) -> None:
    """DatabaseStateBackend: runs are discovered in the order they were stored (the crashed run was
    stored after a later one); a run stored later with an earlier last_run is still found; the newest
    run deleted (delete_run) and its rowid reused by the next is re-read, not skipped."""
    db = seeknal_copy("db")
    state = tmp_path / "tail.sqlite"
    tailer, _ = tailers(db, state=state)
    tailer.run_once()
    assert dict(query(state, "SELECT key, value FROM meta"))["runs_hwm"] == "5"
    conn = sqlite3.connect(db)
    try:
        # seeknal's delete_run on the newest run, then set_run_state of a new one: rowid 5 again.
        conn.execute("DELETE FROM node_state WHERE run_id = '20261205_100138_incr'")
        conn.execute("DELETE FROM run_state WHERE run_id = '20261205_100138_incr'")
        early = "2026-12-01T09:00:00"
        conn.execute(
            "INSERT INTO run_state (run_id, schema_version, seeknal_version, last_run, config_json)"
            " VALUES ('backfilled', '2.0', '2.13.0', ?, NULL)",
            (early,),
        )
        conn.execute(
            "INSERT INTO node_state (run_id, node_id, hash, last_run, status, duration_ms, row_count, version,"
            " metadata_json, fingerprint_json, iceberg_snapshot_id) VALUES ('backfilled', 'source.orders', 'h',"
            " ?, 'success', 500, 7, 1, NULL, ?, '8812093')",
            (early, json.dumps({"content_hash": "c1", "schema_hash": "s1", "upstream_hash": "", "config_hash": "k"})),
        )
        conn.commit()
        assert conn.execute("SELECT rowid FROM run_state WHERE run_id = 'backfilled'").fetchone() == (5,)
    finally:
        conn.close()
    receiver.clear()
    assert tailer.run_once().exported == 2
    [node] = [s for s in receiver.spans if s.parent_span_id]
    assert node.trace_id == trace_hex("backfilled") and node.name == "source.orders"
    assert node.attributes["seeknal.iceberg_snapshot_id"] == "8812093"
    assert node.attributes["seeknal.fingerprint.content_hash"] == "c1"
    assert node.attributes["seeknal.fingerprint.config_hash"] == "k"
    assert "seeknal.fingerprint.upstream_hash" not in node.attributes  # empty: not shown
    assert node.end_ns - node.start_ns == 500 * 10**6


def query(db: Path, sql: str) -> list[Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_run_without_any_time_is_dead_lettered(seeknal_copy, tmp_path: Path) -> None:
    """A run that executed nothing (every node cached or skipped) is an instant at its own last_run; when
    that cannot be read either, its span is dead-lettered (invalid_start_time) and the other runs go out."""
    db = seeknal_copy("db")
    conn = sqlite3.connect(db)
    try:
        conn.execute("UPDATE node_state SET status = 'cached' WHERE run_id = '20261205_100138_incr'")
        conn.execute("UPDATE run_state SET last_run = 'yesterday' WHERE run_id = '20261205_100138_incr'")
        conn.commit()
    finally:
        conn.close()
    with Receiver() as receiver:
        result = replay(make_config(receiver), StateReader(db, naive_timezone=BERLIN), tmp_path / "replay.sqlite")
        assert result.complete and result.spans_dead_lettered == 1
        assert trace_hex("20261205_100138_incr") not in {s.trace_id for s in receiver.spans}
        assert len(receiver.spans) == 16 - 2  # the incr run's span and its one executed node
