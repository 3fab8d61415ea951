"""Bad stored values in label and time columns: the row is skipped and counted, the rest is served.

Every test writes a real fixture copy with a plain sqlite3 connection, the way a buggy or foreign
writer could, then renders the exposition the way ``/metrics`` does (snapshot registry + live
registry through :class:`CachedExposition`) and compares it with the clean copy's.  Where the real
schema forbids a value (flujo 0.4.x's ``CHECK (status IN ...)``, ``NOT NULL``) the constraint is
lifted first, as ``PRAGMA ignore_check_constraints`` or an edited schema would let an app do.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from support import LEGACY, SMALL, SMALL06, computed_at, parse_exposition

from exporter.clock import ManualClock
from exporter.collectors import View, build_registry
from exporter.config import MetricsConfig
from exporter.engines.flujo.active_cache import REREAD_TOP
from exporter.engines.flujo.stuck import StuckPolicy, stuck_workflows
from exporter.engines.flujo.workflows import active_workflows
from exporter.exposition import CachedExposition
from exporter.labels import OTHER
from exporter.reader import StateReader
from exporter.refresh import Refresher
from exporter.timeparse import FUTURE_TOLERANCE, UTC, parse_instant

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

BAD = {"blob": "X'FF00'", "null": "NULL", "invalid_utf8": "CAST(X'C328' AS TEXT)"}

# Families whose values legitimately differ between two copies (file sizes, timings), the
# bad-value counter itself (checked apart) and the watermark-fed counters of the finish tracker,
# which handles bad values on its own (tracking.py has its own tests), and the overview, derived
# from the engine's families (the engine contract suite checks the two agree).
UNCOMPARED = re.compile(
    r"^(state_exporter_|workflow_|flujo_db_(wal_)?size_bytes|flujo_runs_finished|flujo_run_duration_seconds"
    r"|flujo_steps_finished|flujo_step_duration_seconds)"
)


def now_for(name: str) -> datetime:
    return computed_at(SMALL if name == LEGACY else name)


@dataclass
class Exposed:
    samples: Samples
    read_bad: Counter[tuple[str, str]]  # bad values the snapshot reader reported, by (table, column)


def expose(db: Path, now: datetime, refreshes: int = 1, step: float = 60.0, **settings: object) -> Exposed:
    """Refresh (every tier) and render like /metrics; ``refreshes`` > 1 advances the clock ``step`` s
    each time (one reader: the active-row cache is kept between them)."""
    metrics = MetricsConfig(**settings)  # type: ignore[arg-type]
    clock = ManualClock(now)
    refresher = Refresher(StateReader(db, naive_timezone=UTC), lambda: metrics, clock)
    live = CollectorRegistry(auto_describe=False)
    registry = build_registry(View(lambda: refresher.state, lambda: metrics, clock), live=live)
    exposition = CachedExposition(registry, live, lambda: (refresher.state,))
    for i in range(refreshes):
        if i:
            clock.advance(step)
        state = refresher.refresh(force_all=True)
        assert state.problem is None, state.problem
        assert all(phase.success for phase in state.phases.values()), state.phases
    body, _ = exposition.render("text/plain")
    read_bad: Counter[tuple[str, str]] = Counter()
    for tier in (state.fast, state.counts, state.aggregates):
        assert tier is not None
        for bad in tier.bad_values:
            read_bad[(bad.table, bad.column)] += bad.count
    return Exposed(parse_exposition(body.decode()), read_bad)


def compared(samples: Samples) -> Samples:
    return {key: value for key, value in samples.items() if not UNCOMPARED.match(key[0])}


def changes(clean: Samples, dirty: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """dirty - clean for every sample that differs (an absent sample counts as 0)."""
    a, b = compared(clean), compared(dirty)
    return {key: b.get(key, 0.0) - a.get(key, 0.0) for key in a.keys() | b.keys() if a.get(key) != b.get(key)}


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def exposed_bad(samples: Samples, table: str, column: str) -> float:
    return samples.get(key("state_exporter_bad_values_total", table=table, column=column), 0.0)


def write(db: Path, table: str, column: str, rowid: int, expression: str) -> None:
    """``UPDATE table SET column = expression``, lifting a CHECK or NOT NULL constraint that forbids it."""
    conn = sqlite3.connect(db)
    if expression == "NULL":
        _allow_null(conn, table, column)
        conn.close()
        conn = sqlite3.connect(db)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    conn.execute(f"UPDATE {table} SET {column} = {expression} WHERE rowid = ?", (rowid,))
    conn.commit()
    conn.close()


def _allow_null(conn: sqlite3.Connection, table: str, column: str) -> None:
    notnull = {row[1]: row[3] for row in conn.execute(f"PRAGMA table_info({table})")}
    if not notnull[column]:
        return
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()[0]
    relaxed, n = re.subn(rf"(\b{column}\s+TEXT\s+)NOT NULL", r"\1", sql)
    assert n == 1, sql
    version = conn.execute("PRAGMA schema_version").fetchone()[0]
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", (relaxed, table))
    conn.execute(f"PRAGMA schema_version = {version + 1}")
    conn.commit()
    conn.execute("PRAGMA writable_schema = OFF")


def one(db: Path, sql: str) -> tuple[Any, ...]:
    conn = sqlite3.connect(db)
    try:
        row: tuple[Any, ...] | None = conn.execute(sql).fetchone()
    finally:
        conn.close()
    assert row is not None, sql
    return row


def has_column(db: Path, table: str, column: str) -> bool:
    conn = sqlite3.connect(db)
    try:
        return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))
    finally:
        conn.close()


def top_level(db: Path) -> str:
    return " AND COALESCE(is_background_task, 0) = 0" if has_column(db, "workflow_state", "is_background_task") else ""


# --- one bad value in each label column ---------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad value: where it goes, and what it must change in the exposition and the counters."""

    table: str
    column: str
    fixtures: tuple[str, ...]
    target: Callable[[Path], tuple[int, dict[tuple[str, frozenset[tuple[str, str]]], float]]]
    bad_reads: int  # the queries that read the column: each counts the value once per refresh


def ws_completed(db: Path) -> tuple[int, str]:
    rowid, pipeline = one(
        db, f"SELECT rowid, pipeline_name FROM workflow_state WHERE status = 'completed'{top_level(db)} LIMIT 1"
    )
    return int(rowid), str(pipeline)


def ws_status(db: Path) -> tuple[int, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    rowid, pipeline = ws_completed(db)
    return rowid, {
        key("flujo_workflows", status="completed"): -1,
        key("flujo_workflows_by_pipeline", pipeline=pipeline, status="completed"): -1,
    }


def ws_pipeline(db: Path) -> tuple[int, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    rowid, pipeline = ws_completed(db)
    return rowid, {key("flujo_workflows_by_pipeline", pipeline=pipeline, status="completed"): -1}


def runs_completed(db: Path) -> tuple[int, str]:
    # A run whose workflow row is not active: the active rows do not read its pipeline name.
    rowid, pipeline = one(
        db,
        "SELECT r.rowid, r.pipeline_name FROM runs r LEFT JOIN workflow_state ws ON ws.run_id = r.run_id"
        " WHERE r.status = 'completed' AND COALESCE(ws.status, '') NOT IN ('running', 'paused') LIMIT 1",
    )
    return int(rowid), str(pipeline)


def runs_status(db: Path) -> tuple[int, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    rowid, pipeline = runs_completed(db)
    return rowid, {
        key("flujo_runs", status="completed"): -1,
        key("flujo_runs_by_pipeline", pipeline=pipeline, status="completed"): -1,
    }


def runs_pipeline(db: Path) -> tuple[int, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    rowid, pipeline = runs_completed(db)
    return rowid, {key("flujo_runs_by_pipeline", pipeline=pipeline, status="completed"): -1}


def span_status(db: Path) -> tuple[int, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    (rowid,) = one(db, "SELECT rowid FROM spans WHERE status = 'completed' AND end_time IS NOT NULL LIMIT 1")
    # Still stored, still finished: only its status series loses it.
    return int(rowid), {key("flujo_spans_by_status", status="completed"): -1}


CASES = [
    Case("workflow_state", "status", (SMALL, SMALL06, LEGACY), ws_status, bad_reads=2),
    Case("workflow_state", "pipeline_name", (SMALL, SMALL06, LEGACY), ws_pipeline, bad_reads=1),
    Case("runs", "status", (SMALL, SMALL06), runs_status, bad_reads=2),
    Case("runs", "pipeline_name", (SMALL, SMALL06), runs_pipeline, bad_reads=1),
    Case("spans", "status", (SMALL, SMALL06), span_status, bad_reads=1),
]


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize(
    ("case", "name"),
    [(case, name) for case in CASES for name in case.fixtures],
    ids=lambda v: f"{v.table}.{v.column}" if isinstance(v, Case) else v,
)
def test_bad_label_value_is_skipped_and_counted(fixture_copy, case: Case, name: str, kind: str) -> None:
    db = fixture_copy(name)
    now = now_for(name)
    clean = expose(db, now)
    rowid, expected = case.target(db)
    write(db, case.table, case.column, rowid, BAD[kind])
    dirty = expose(db, now)
    assert changes(clean.samples, dirty.samples) == expected
    assert dirty.read_bad == {(case.table, case.column): case.bad_reads}
    assert exposed_bad(dirty.samples, case.table, case.column) >= case.bad_reads
    for (_, labels), _value in dirty.samples.items():
        for _, text in labels:
            text.encode("utf-8")  # nothing but valid text reaches a label


@pytest.mark.parametrize("name", [SMALL, SMALL06])
@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_pipeline_of_an_active_run_skips_the_row(fixture_copy, name: str, kind: str) -> None:
    """Active rows read the pipeline too (and through the V0435 row cache on 0.4.35 files): a stuck
    long_job run with a bad name leaves the active and stuck counts, and is counted again on the next
    refresh (a bad row is never cached)."""
    db = fixture_copy(name)
    now = now_for(name)
    clean = expose(db, now, refreshes=2)
    stuck_before = (now - timedelta(hours=2)).replace(tzinfo=None).isoformat()
    (rowid,) = one(
        db,
        "SELECT rowid FROM workflow_state WHERE pipeline_name = 'long_job' AND status = 'running'"
        f" AND updated_at < '{stuck_before}'{top_level(db)} ORDER BY updated_at DESC LIMIT 1",
    )
    write(db, "workflow_state", "pipeline_name", int(rowid), BAD[kind])
    dirty = expose(db, now, refreshes=2)
    diff = changes(clean.samples, dirty.samples)
    assert diff.pop(key("flujo_workflows_active", pipeline="long_job", status="running")) == -1
    assert diff.pop(key("flujo_workflows_stuck", pipeline="long_job", status="running")) == -1
    assert diff.pop(key("flujo_workflows_by_pipeline", pipeline="long_job", status="running")) == -1
    assert diff == {}  # the newest-updated stuck run is not the oldest: that value is unchanged too
    # twice per refresh (active rows, aggregate), every refresh
    assert dirty.read_bad == {("workflow_state", "pipeline_name"): 2}
    assert exposed_bad(dirty.samples, "workflow_state", "pipeline_name") == 4


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_runs_pipeline_behind_an_unknown_workflow_pipeline(fixture_copy, kind: str) -> None:
    """flujo's default context writes pipeline_name 'unknown'; the active rows then take the name from
    runs.  A bad one there skips the row and is counted against runs.pipeline_name."""
    db = fixture_copy(SMALL)
    now = now_for(SMALL)
    conn = sqlite3.connect(db)
    stuck_before = (now - timedelta(hours=2)).replace(tzinfo=None).isoformat()
    run_id, pipeline = conn.execute(
        "SELECT ws.run_id, r.pipeline_name FROM workflow_state ws JOIN runs r ON r.run_id = ws.run_id"
        " WHERE ws.status = 'running' AND ws.pipeline_name = 'long_job' AND ws.updated_at < ?"
        " ORDER BY ws.updated_at DESC LIMIT 1",
        (stuck_before,),
    ).fetchone()
    conn.execute("UPDATE workflow_state SET pipeline_name = 'unknown' WHERE run_id = ?", (run_id,))
    conn.commit()
    (rowid,) = conn.execute("SELECT rowid FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    conn.close()
    clean = expose(db, now)
    assert pipeline == "long_job"
    write(db, "runs", "pipeline_name", rowid, BAD[kind])
    dirty = expose(db, now)
    diff = changes(clean.samples, dirty.samples)
    assert diff.pop(key("flujo_workflows_active", pipeline="long_job", status="running")) == -1
    assert diff.pop(key("flujo_workflows_stuck", pipeline="long_job", status="running")) == -1
    assert diff.pop(key("flujo_runs_by_pipeline", pipeline="long_job", status="running")) == -1
    assert diff == {}
    assert dirty.read_bad == {("runs", "pipeline_name"): 2}  # active rows + runs by pipeline


def test_a_bad_group_counts_every_row(fixture_copy) -> None:
    """GROUP BY queries see a bad value once per group: it still counts one bad value per row."""
    db = fixture_copy(SMALL06)
    now = now_for(SMALL06)
    clean = expose(db, now)
    conn = sqlite3.connect(db)
    moved = conn.execute("UPDATE spans SET status = X'FF00' WHERE status = 'completed'").rowcount
    conn.commit()
    conn.close()
    dirty = expose(db, now)
    assert moved == clean.samples[key("flujo_spans_by_status", status="completed")] > 100
    assert changes(clean.samples, dirty.samples) == {key("flujo_spans_by_status", status="completed"): -moved}
    assert dirty.read_bad == {("spans", "status"): moved}


# --- future timestamps --------------------------------------------------------------------------


def naive(instant: datetime) -> str:
    return instant.replace(tzinfo=None).isoformat()


def in_window(raw: object, now: datetime) -> bool:
    instant = parse_instant(raw, UTC)
    return instant is not None and now - timedelta(hours=24) <= instant <= now


@pytest.mark.parametrize("name", [SMALL, SMALL06, LEGACY])
@pytest.mark.parametrize("future", ["9999-12-31T23:59:59", "9999-12-31T23:59:59+00:00", "+6min"])
def test_future_created_at_is_not_created_in_the_last_24h(fixture_copy, name: str, future: str) -> None:
    db = fixture_copy(name)
    now = now_for(name)
    clean = expose(db, now)
    rowid, created = one(db, f"SELECT rowid, created_at FROM workflow_state WHERE 1{top_level(db)} LIMIT 1")
    value = naive(now + FUTURE_TOLERANCE + timedelta(minutes=1)) if future == "+6min" else future
    write(db, "workflow_state", "created_at", int(rowid), f"'{value}'")
    dirty = expose(db, now)
    lost = -1 if in_window(created, now) else 0
    assert changes(clean.samples, dirty.samples) == ({key("flujo_workflows_created_last_24h"): lost} if lost else {})
    assert dirty.read_bad == {("workflow_state", "created_at"): 1}


@pytest.mark.parametrize("name", [SMALL, SMALL06])
@pytest.mark.parametrize("ahead", [timedelta(seconds=1), FUTURE_TOLERANCE])
def test_a_writer_clock_slightly_ahead_reads_as_now(fixture_copy, name: str, ahead: timedelta) -> None:
    """A row written by a clock a little ahead of the daemon's (or between its clock reading and its
    query) is created now, updated now (never stuck, never older than now): no bad value."""
    db = fixture_copy(name)
    now = now_for(name)
    clean = expose(db, now)
    old = naive(now - timedelta(days=2))
    (created_rowid,) = one(db, f"SELECT rowid FROM workflow_state WHERE created_at < '{old}'{top_level(db)} LIMIT 1")
    write(db, "workflow_state", "created_at", int(created_rowid), f"'{naive(now + ahead)}'")
    (running_rowid,) = one(
        db,
        "SELECT rowid FROM workflow_state WHERE pipeline_name = 'long_job' AND status = 'running'"
        f"{top_level(db)} ORDER BY updated_at LIMIT 1",
    )
    write(db, "workflow_state", "updated_at", int(running_rowid), f"'{naive(now + ahead)}'")
    dirty = expose(db, now)
    diff = changes(clean.samples, dirty.samples)
    assert diff.pop(key("flujo_workflows_created_last_24h")) == 1
    assert diff.pop(key("flujo_workflows_stuck", pipeline="long_job", status="running")) == -1
    oldest = key("flujo_workflows_oldest_update_timestamp_seconds", pipeline="long_job", status="running")
    assert clean.samples[oldest] < dirty.samples[oldest] <= now.timestamp()  # it was the oldest
    del diff[oldest]
    assert diff == {}
    assert dirty.read_bad == {}


@pytest.mark.parametrize("name", [SMALL, SMALL06])
@pytest.mark.parametrize("kind", ["blob", "invalid_utf8"])
@pytest.mark.parametrize(
    ("column", "where", "family"),
    [
        ("created_at", "1", "flujo_workflows_created_last_24h"),
        ("updated_at", "status = 'failed'", "flujo_workflows_failed_last_24h"),
        ("updated_at", "status = 'running' AND pipeline_name = 'long_job'", "flujo_workflows_stuck"),
    ],
    ids=["created", "failed", "running"],
)
def test_unreadable_timestamp_is_skipped_and_counted(
    fixture_copy, name: str, kind: str, column: str, where: str, family: str
) -> None:
    """Every time column the snapshot reads: the newest matching row (in the window, or stuck) loses
    its place in the family, nothing else changes, and its value is counted once."""
    db = fixture_copy(name)
    now = now_for(name)
    clean = expose(db, now)
    order = "DESC" if family != "flujo_workflows_stuck" else "ASC"
    (rowid,) = one(db, f"SELECT rowid FROM workflow_state WHERE {where}{top_level(db)} ORDER BY {column} {order}")
    write(db, "workflow_state", column, int(rowid), BAD[kind])
    dirty = expose(db, now)
    diff = changes(clean.samples, dirty.samples)
    labels = {"pipeline": "long_job", "status": "running"} if family == "flujo_workflows_stuck" else {}
    assert diff.pop(key(family, **labels)) == -1
    diff.pop(key("flujo_workflows_oldest_update_timestamp_seconds", **labels), None)  # it was the oldest
    assert diff == {}
    assert dirty.read_bad == {("workflow_state", column): 1}


@pytest.mark.parametrize("name", [SMALL, SMALL06])
def test_window_is_exactly_the_last_24h(fixture_copy, name: str) -> None:
    """Both ends are in: created exactly 24 h ago, and exactly now."""
    db = fixture_copy(name)
    now = now_for(name)
    clean = expose(db, now)
    conn = sqlite3.connect(db)
    old = f"SELECT rowid FROM workflow_state WHERE created_at < '{naive(now - timedelta(days=2))}'{top_level(db)}"
    rowids = [r for (r,) in conn.execute(old + " LIMIT 2")]
    conn.close()
    assert len(rowids) == 2
    for rowid, instant in zip(rowids, (now - timedelta(hours=24), now), strict=True):
        write(db, "workflow_state", "created_at", rowid, f"'{naive(instant)}'")
    dirty = expose(db, now)
    assert changes(clean.samples, dirty.samples) == {key("flujo_workflows_created_last_24h"): 2}
    assert dirty.read_bad == {}


@pytest.mark.parametrize("name", [SMALL, SMALL06])
def test_future_updated_at_of_a_failed_run_is_not_failed_in_the_last_24h(fixture_copy, name: str) -> None:
    db = fixture_copy(name)
    now = now_for(name)
    clean = expose(db, now)
    rowid, updated = one(
        db, f"SELECT rowid, updated_at FROM workflow_state WHERE status = 'failed'{top_level(db)} ORDER BY updated_at"
    )
    write(db, "workflow_state", "updated_at", int(rowid), "'9999-12-31T23:59:59'")
    dirty = expose(db, now)
    lost = -1 if in_window(updated, now) else 0
    assert changes(clean.samples, dirty.samples) == ({key("flujo_workflows_failed_last_24h"): lost} if lost else {})
    assert dirty.read_bad == {("workflow_state", "updated_at"): 1}


@pytest.mark.parametrize("name", [SMALL, SMALL06])
def test_future_updated_at_of_an_active_run_is_never_stuck_nor_oldest(fixture_copy, name: str) -> None:
    """The run still counts as active; it is not judged, gives no negative age and is not the oldest."""
    db = fixture_copy(name)
    now = now_for(name)
    clean = expose(db, now)
    (rowid, run_id) = one(
        db,
        "SELECT rowid, run_id FROM workflow_state WHERE pipeline_name = 'long_job' AND status = 'running'"
        f"{top_level(db)} ORDER BY updated_at LIMIT 1",
    )
    soon = naive(now + FUTURE_TOLERANCE + timedelta(seconds=30))
    write(db, "workflow_state", "updated_at", int(rowid), f"'{soon}'")
    dirty = expose(db, now)
    diff = changes(clean.samples, dirty.samples)
    assert diff.pop(key("flujo_workflows_stuck", pipeline="long_job", status="running")) == -1
    oldest = key("flujo_workflows_oldest_update_timestamp_seconds", pipeline="long_job", status="running")
    assert clean.samples[oldest] < dirty.samples[oldest] <= now.timestamp()
    del diff[oldest]
    assert diff == {}
    assert dirty.read_bad == {("workflow_state", "updated_at"): 1}
    # the alerts' path judges the same way
    with StateReader(db, naive_timezone=UTC).session() as s:
        active = active_workflows(s.conn, s.schema, s.naive_tz, [])
    assert run_id in {r.run_id for r in active}
    assert run_id not in {r.run_id for r in stuck_workflows(active, now, StuckPolicy(timedelta(hours=1)))}


@pytest.mark.parametrize("name", [SMALL, SMALL06])
def test_a_future_update_is_judged_once_the_clock_passes_it(fixture_copy, name: str) -> None:
    """Bad rows are never cached: two hours later the same reader judges the row like a fresh one.
    (10k newer rows put the fixture's rows below the cache's always-reread top on 0.4.35.)"""
    db = fixture_copy(name)
    now = now_for(name)
    conn = sqlite3.connect(db)
    _bulk(
        conn,
        "INSERT INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version, current_step_index,"
        " pipeline_context, status, created_at, updated_at)"
        " SELECT 'filler_' || i, 'p', 'p', '1', 0, '{}', 'completed', '2026-01-01T00:00:00', '2026-01-01T00:00:00'"
        " FROM k",
        REREAD_TOP + 1,
    )
    conn.commit()
    conn.close()
    (rowid,) = one(db, f"SELECT rowid FROM workflow_state WHERE status = 'running'{top_level(db)} LIMIT 1")
    write(db, "workflow_state", "updated_at", int(rowid), f"'{naive(now + FUTURE_TOLERANCE + timedelta(seconds=30))}'")
    later = expose(db, now, refreshes=2, step=7200)
    fresh = expose(db, now + timedelta(hours=2))
    assert later.read_bad == fresh.read_bad == {}
    assert compared(later.samples) == compared(fresh.samples)


# --- label caps -------------------------------------------------------------------------------


def _distinct(samples: Samples, family: str, label: str) -> set[str]:
    return {dict(labels)[label] for name, labels in samples if name == family}


def _bulk(conn: sqlite3.Connection, sql: str, n: int) -> None:
    conn.execute(f"WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n}) {sql}")


@pytest.mark.parametrize("name", [SMALL, SMALL06, LEGACY])
def test_ten_thousand_distinct_statuses_and_pipelines_stay_bounded(fixture_copy, name: str) -> None:
    db = fixture_copy(name)
    now = now_for(name)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    _bulk(
        conn,
        "INSERT INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version, current_step_index,"
        " pipeline_context, status, created_at, updated_at)"
        " SELECT 'bulk_' || i, 'pipe_' || i, 'pipe_' || i, '1', 0, '{}',"
        " CASE WHEN i % 2 THEN 'running' ELSE 'state_' || i END, '2026-01-01T00:00:00', '2026-01-01T00:00:00'"
        " FROM k",
        10_000,
    )
    if has_column(db, "workflow_state", "is_background_task"):
        _bulk(
            conn,
            "INSERT INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version, current_step_index,"
            " pipeline_context, status, created_at, updated_at, is_background_task, parent_run_id)"
            " SELECT 'task_' || i, 'p', 'p', '1', 0, '{}', 'task_state_' || i, '2026-01-01T00:00:00',"
            " '2026-01-01T00:00:00', 1, 'bulk_1' FROM k",
            10_000,
        )
    if has_column(db, "runs", "start_time"):  # 0.4.35
        _bulk(
            conn,
            "INSERT INTO runs (run_id, pipeline_name, pipeline_version, status, start_time)"
            " SELECT 'bulk_' || i, 'pipe_' || i, '1', 'run_state_' || i, '2026-01-01T00:00:00' FROM k",
            10_000,
        )
    elif has_column(db, "runs", "created_at"):  # 0.6
        _bulk(
            conn,
            "INSERT INTO runs (run_id, pipeline_id, pipeline_name, pipeline_version, status, created_at, updated_at)"
            " SELECT 'bulk_' || i, 'p', 'pipe_' || i, '1', 'run_state_' || i, '2026-01-01', '2026-01-01' FROM k",
            10_000,
        )
    if has_column(db, "spans", "status"):
        _bulk(
            conn,
            "INSERT INTO spans (span_id, run_id, name, start_time, status, created_at)"
            " SELECT 'bulk_span_' || i, 'bulk_1', 'step', 0, 'span_state_' || i, '2026-01-01 00:00:00' FROM k",
            10_000,
        )
    conn.commit()
    conn.close()
    samples = expose(db, now, flujo_compat=True).samples
    statuses, pipelines = 20, 50  # the defaults
    bounds = {
        "flujo_workflows": 5,
        "flujo_workflows_by_pipeline": 5,
        "flujo_background_tasks": 5,
        "flujo_runs": 4,
        "flujo_runs_by_pipeline": 4,
        "flujo_spans_by_status": 5,
        "flujo_runs_by_status": 5,
        "flujo_background_tasks_by_status": 5,
    }
    present = {family for family, _ in samples}
    for family, known in bounds.items():
        if family not in present:
            continue
        seen = _distinct(samples, family, "status")
        assert len(seen) <= statuses + known + 1, (family, len(seen))
        if family in ("flujo_workflows", "flujo_runs", "flujo_spans_by_status", "flujo_runs_by_status"):
            assert OTHER in seen, family
    for family in ("flujo_workflows_by_pipeline", "flujo_workflows_active", "flujo_runs_by_pipeline"):
        if family in present:
            assert len(_distinct(samples, family, "pipeline")) <= pipelines + 1, family
    assert len(samples) < 2_000
    # nothing is lost by folding: every workflow row is still counted
    top = sum(v for (n, _), v in samples.items() if n == "flujo_workflows")
    assert top == one(db, f"SELECT COUNT(*) FROM workflow_state WHERE 1{top_level(db)}")[0]


def test_finished_counters_fold_new_statuses_stably(fixture_copy) -> None:
    """Counters fold statuses past the cap into 'other' with a stable allocation: no series goes down."""
    db = fixture_copy(SMALL)
    now = now_for(SMALL)
    metrics = MetricsConfig(max_statuses=3)
    clock = ManualClock(now)
    refresher = Refresher(StateReader(db, naive_timezone=UTC), lambda: metrics, clock)
    live = CollectorRegistry(auto_describe=False)
    registry = build_registry(View(lambda: refresher.state, lambda: metrics, clock), live=live)
    exposition = CachedExposition(registry, live, lambda: (refresher.state,))
    refresher.refresh(force_all=True)
    before = parse_exposition(exposition.render("text/plain")[0].decode())
    conn = sqlite3.connect(db)
    for batch in range(2):
        _bulk(
            conn,
            "INSERT INTO runs (run_id, pipeline_name, pipeline_version, status, start_time, end_time)"
            f" SELECT 'bulk{batch}_' || i, 'etl_daily', '1', 'weird_' || (i % 50), '2026-11-21T11:00:00',"
            " '2026-11-21T11:01:00' FROM k",
            500,
        )
        conn.commit()
        clock.advance(60)
        refresher.refresh(force_all=True)
        after = parse_exposition(exposition.render("text/plain")[0].decode())
        finished = {k: v for k, v in after.items() if k[0] == "flujo_runs_finished_total"}
        seen = _distinct(after, "flujo_runs_finished_total", "status")
        assert len(seen) <= 3 + 3 + 1
        assert all(v >= before.get(k, 0.0) for k, v in finished.items())
        tracked = {status for _, status in refresher.state.finished.runs}
        if len(tracked - {"completed", "failed", "cancelled"}) > 3:
            assert OTHER in seen
        before = after
    conn.close()
