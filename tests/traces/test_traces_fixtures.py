"""Every real fixture DB, over both transports: ids, parents, times, status and attributes as received."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support import LEGACY, SMALL, SMALL06, computed_at, expected, make_hybrid
from traces.flujo_db import span_hex, stored_spans, trace_hex
from traces.receiver import ReceivedSpan, Receiver

from exporter import __version__
from exporter.engines.flujo.spantime import ClockKind
from exporter.timeparse import parse_instant

FINISHED = ("completed", "failed", "cancelled")
DAY = 86400.0


def run_rows(db: Path) -> dict[str, dict[str, Any]]:
    """Per run: the status that decides "finished" and the run's end as epoch seconds."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    cols = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    end_expr = "r.end_time" if "updated_at" not in cols else "COALESCE(NULLIF(r.end_time, ''), r.updated_at)"
    rows = conn.execute(
        f"SELECT r.run_id, r.status AS run_status, ws.status AS ws_status, {end_expr} AS end_raw,"
        " r.pipeline_name, r.pipeline_version FROM runs r LEFT JOIN workflow_state ws USING (run_id)"
    ).fetchall()
    conn.close()
    result = {}
    for row in rows:
        status = row["ws_status"] or row["run_status"]
        end = parse_instant(row["end_raw"], UTC) if status in FINISHED else None
        result[row["run_id"]] = {
            "status": status,
            "finished": status in FINISHED,
            "end": end.timestamp() if end else None,
            "pipeline": row["pipeline_name"],
            "version": row["pipeline_version"],
        }
    return result


def export_everything(make_tailer: Any, db: Path, protocol: str, receiver: Receiver) -> None:
    now = computed_at(db.name if db.name != "hybrid.db" else SMALL)
    tailer, clock = make_tailer(db, now, protocol)
    first = tailer.run_once()
    assert not first.interrupted and first.discovered == 60
    clock.advance(8 * DAY)  # past abandon_after: runs still unfinished are exported as they are
    tailer.run_once()
    assert tailer.run_once().exported == 0  # nothing left, nothing repeated


def check_received(db: Path, receiver: Receiver, protocol: str, monotonic: bool) -> None:
    stored = stored_spans(db)
    runs = run_rows(db)
    assert Counter(receiver.keys.values()) == Counter({1: len(stored)}), "every span exactly once"
    got = receiver.by_key()
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in stored:
        by_run[row["run_id"]].append(row)
    for run_id, rows in by_run.items():
        run = runs[run_id]
        received = {row["span_id"]: got[(trace_hex(run_id), span_hex(run_id, row["span_id"]))] for row in rows}
        roots = [row for row in rows if row["parent_span_id"] is None]
        assert len(roots) == 1
        root = received[roots[0]["span_id"]]
        offset = root.start_ns / 1e9 - roots[0]["start_time"]  # 0 for epoch times
        if not monotonic:
            assert abs(offset) < 1e-6
        for row in rows:
            span = received[row["span_id"]]
            check_span(row, span, run, run_id, offset, rows, protocol)


def check_span(
    row: dict[str, Any],
    span: ReceivedSpan,
    run: dict[str, Any],
    run_id: str,
    offset: float,
    rows: list[dict[str, Any]],
    protocol: str,
) -> None:
    assert span.transport == protocol.split("/")[0]
    assert span.name == row["name"] and span.kind == 1
    parent = row["parent_span_id"]
    assert span.parent_span_id == (span_hex(run_id, parent) if parent else "")
    assert abs(span.start_ns / 1e9 - (row["start_time"] + offset)) < 2e-6
    attributes = json.loads(row["attributes"])
    if row["end_time"] is not None:
        assert abs(span.end_ns / 1e9 - (row["end_time"] + offset)) < 2e-6
        assert "flujo.exporter.end_time_inferred" not in span.attributes
    else:
        assert span.attributes["flujo.exporter.end_time_inferred"] is True
        source = span.attributes["flujo.exporter.end_time_source"]
        if run["finished"]:
            assert source == "run_end"
            assert abs(span.end_ns / 1e9 - run["end"]) < 2e-6
        else:  # abandoned: the last child's end, else the span's own start
            children = [r for r in rows if r["parent_span_id"] == row["span_id"]]
            if children:
                last = max(r["end_time"] if r["end_time"] is not None else r["start_time"] for r in children)
                assert source == "last_child_end"
                assert abs(span.end_ns / 1e9 - (last + offset)) < 2e-6
            else:
                assert source == "span_start" and span.end_ns == span.start_ns
    assert span.end_ns >= span.start_ns
    status = row["status"]
    if status == "completed":
        assert (span.status_code, span.status_message) == (1, "")
    elif status in ("failed", "error"):
        assert span.status_code == 2
        assert span.status_message == attributes.get("feedback", attributes.get("error_summary", ""))
    else:
        assert (span.status_code, span.status_message) == (0, "")
    assert span.attributes["flujo.span.status"] == status
    for key, value in attributes.items():
        assert span.attributes[key] == value, key
    if parent is None:
        assert span.attributes["flujo.run_id"] == run_id
        assert span.attributes["flujo.pipeline.name"] == run["pipeline"]
        assert span.attributes["flujo.pipeline.version"] == run["version"]
        assert span.attributes["flujo.run.status"] == run["status"]
    else:
        assert "flujo.run_id" not in span.attributes or attributes.get("flujo.run_id") == run_id
    assert span.resource == {"service.name": "flujo"}
    assert (span.scope_name, span.scope_version) == ("flujo-state-exporter", __version__)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_0435_fixture(fixture_copy, make_tailer, receiver: Receiver, protocol: str) -> None:
    db = fixture_copy(SMALL)
    export_everything(make_tailer, db, protocol, receiver)
    data = expected(SMALL)
    assert receiver.received() == data["spans_total_via_get_spans"] == 199
    per_trace = Counter(span.trace_id for span in receiver.spans)
    assert per_trace == Counter({trace_hex(r): n for r, n in data["spans_per_run"].items() if n})
    check_received(db, receiver, protocol, monotonic=False)
    inferred = [s for s in receiver.spans if s.attributes.get("flujo.exporter.end_time_inferred")]
    assert len(inferred) == data["spans_unfinished_end_time_null"] == 62


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_06_fixture_monotonic_times(fixture_copy, make_tailer, receiver: Receiver, protocol: str) -> None:
    db = fixture_copy(SMALL06)
    export_everything(make_tailer, db, protocol, receiver)
    data = expected(SMALL06)
    assert receiver.received() == data["spans_total_via_get_spans"] == 234
    per_trace = Counter(span.trace_id for span in receiver.spans)
    assert per_trace == Counter({trace_hex(r): n for r, n in data["spans_per_run"].items() if n})
    check_received(db, receiver, protocol, monotonic=True)
    roots = {s.trace_id: s for s in receiver.spans if not s.parent_span_id}
    checked = 0
    for run in data["per_run"]:
        truth = run.get("root_span_start_wall_utc_truth")
        if truth is None:
            continue
        root = roots[trace_hex(run["run_id"])]
        error = abs(root.start_ns / 1e9 - datetime.fromisoformat(truth).timestamp())
        bound = root.attributes["flujo.exporter.clock_error_bound_s"]
        assert error <= bound + 1e-6, (run["run_id"], error, bound)  # + the nanosecond rounding of the export
        assert bound <= 0.002  # bracketed between runs.created_at and the run's end: tight on this fixture
        assert root.attributes["flujo.exporter.clock"] == ClockKind.BRACKETED
        assert root.status_code == {"completed": 1, "failed": 2}.get(run["root_span_status"], 0)
        checked += 1
    assert checked == 56


def test_hybrid_layout(fixture_copy, make_tailer, receiver: Receiver) -> None:
    db = fixture_copy(SMALL)
    make_hybrid(db)
    export_everything(make_tailer, db, "grpc", receiver)
    assert receiver.received() == 199
    check_received(db, receiver, "grpc", monotonic=False)


def test_legacy_layout_reported_once(fixture_copy, make_tailer, receiver: Receiver, caplog) -> None:
    db = fixture_copy(LEGACY)
    tailer, _ = make_tailer(db, datetime(2026, 11, 21, tzinfo=UTC))
    with caplog.at_level(logging.WARNING, logger="exporter.traces"):
        reports = [tailer.run_once() for _ in range(3)]
    assert all(not r.supported for r in reports)
    messages = [r.getMessage() for r in caplog.records if "not supported by this DB layout" in r.getMessage()]
    assert len(messages) == 1 and "0.4.32-legacy" in messages[0]
    assert receiver.requests == 0
    assert tailer.stats.supported is False
    assert tailer.exported_run_ids(["run_legacy_0001"]) == {"run_legacy_0001"}  # nothing to wait for
