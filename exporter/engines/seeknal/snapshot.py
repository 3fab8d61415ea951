"""The refresh tiers over a seeknal state DB, each in one short read transaction.

* *snapshot* (every refresh): running nodes and the stuck rule (through the status index), locks;
* *counts* (every ``metrics.counts_interval``): runs by derived status (one ``GROUP BY run_id``
  in SQLite) and the latest run's nodes (through the run_id index);
* *aggregates* (every ``metrics.aggregate_interval``): executions, durations, freshness and
  intervals, from one pass over ``node_state``.

Times: ``last_run`` (run and node) is the writer's naive local time, converted with the configured
``db.writer_timezone`` (never compared as text); ``locked_at`` is SQLite ``CURRENT_TIMESTAMP``
(UTC, the DB write time).  ``last_run`` is stamped after a node ran: its start is
``last_run - duration_ms``.  A node not re-executed in a run keeps its old row (old ``last_run``)
in that run, so an execution is one distinct ``(node_id, last_run)``.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

from exporter.engines.seeknal.layout import LOCKS, NODES, RUNS, Schema
from exporter.engines.seeknal.statuses import FAILED, FINISHED_NODE_STATUSES, PENDING, RUNNING, SUCCESS, node_status
from exporter.labels import label_text
from exporter.model import RUN_DURATION_BUCKETS, Histogram, StuckReason
from exporter.reader.badvalues import BadValue, shown
from exporter.timeparse import TimestampError, parse_instant

if TYPE_CHECKING:
    from exporter.config import MetricsConfig

STUCK_REASONS = (StuckReason.IDLE,)
# seeknal's own rule of thumb (its README); metrics.stuck.running_after overrides it when set.
DEFAULT_STUCK_AFTER = timedelta(minutes=30)
# Nodes are often sub-second: finer low buckets than the runs'.
NODE_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, *RUN_DURATION_BUCKETS)
UNKNOWN_KIND = "unknown"


def stuck_after(settings: MetricsConfig, node_id: str) -> timedelta:
    """``metrics.stuck.per_pipeline[node_id]``, else ``metrics.stuck.running_after`` when set, else 30 min."""
    stuck = settings.stuck
    if node_id in stuck.per_pipeline:
        return stuck.per_pipeline[node_id]
    return stuck.running_after if "running_after" in stuck.model_fields_set else DEFAULT_STUCK_AFTER


def node_kind(node_id: str) -> str:
    kind, dot, _ = node_id.partition(".")
    return kind if dot and kind else UNKNOWN_KIND


@dataclass(frozen=True)
class RunningNode:
    run_id: str
    node_id: str
    last_run: float  # Unix time of its row's last_run (the last write of the node)
    since: float  # last_run - duration_ms
    threshold: timedelta


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    running: tuple[RunningNode, ...]
    stuck: tuple[RunningNode, ...]
    locks_held: int
    oldest_lock: float | None
    bad_values: tuple[BadValue, ...] = field(default=())


@dataclass(frozen=True)
class Counts:
    taken_at: datetime
    runs_by_status: Counter[str]  # derived run statuses
    latest_run: str | None
    latest_nodes: Counter[tuple[str, str]]  # (kind, status) of the latest run's nodes
    oldest_active_update: float | None  # the longest-idle running run's newest write
    bad_values: tuple[BadValue, ...] = field(default=())


@dataclass(frozen=True)
class Aggregates:
    taken_at: datetime
    node_order: tuple[str, ...]  # node ids by first execution: the label cap keeps the first ones
    executions: Counter[tuple[str, str]]  # (node_id, final status), one per (node_id, last_run)
    durations: dict[str, Histogram]
    last_success: dict[str, float]
    rows_processed: dict[str, float]  # row_count of each node's latest execution
    completed_intervals: dict[str, int]  # from each node's latest row
    restatement_pending: dict[str, int]
    bad_values: tuple[BadValue, ...] = field(default=())


def _instant(value: object, tz: tzinfo, table: str, column: str, key: str, bad: list[BadValue]) -> float | None:
    try:
        parsed = parse_instant(value, tz)
    except TimestampError:
        bad.append(BadValue(table, column, key, shown(value)))
        return None
    return None if parsed is None else parsed.timestamp()


def running_nodes(
    conn: sqlite3.Connection, tz: tzinfo, settings: MetricsConfig, bad: list[BadValue]
) -> list[RunningNode]:
    found = []
    sql = f"SELECT run_id, node_id, last_run, duration_ms FROM {NODES} WHERE status = '{RUNNING}'"
    for run_id, node_id, last_run, duration_ms in conn.execute(sql):
        key = str(run_id)
        node = label_text(node_id)
        if node is None:
            bad.append(BadValue(NODES, "node_id", key, shown(node_id)))
            continue
        written = _instant(last_run, tz, NODES, "last_run", key, bad)
        if written is None:
            if last_run is None:
                bad.append(BadValue(NODES, "last_run", key, shown(last_run)))
            continue
        ms = duration_ms if isinstance(duration_ms, int | float) else 0
        found.append(RunningNode(key, node, written, written - ms / 1000, stuck_after(settings, node)))
    return found


def stuck_nodes(running: list[RunningNode], now: datetime) -> list[RunningNode]:
    """seeknal has no stuck rule of its own: running, and its row not written for longer than its threshold."""
    at = now.timestamp()
    return [node for node in running if at - node.last_run > node.threshold.total_seconds()]


def snapshot(conn: sqlite3.Connection, schema: Schema, tz: tzinfo, now: datetime, settings: MetricsConfig) -> Snapshot:
    bad: list[BadValue] = []
    running = running_nodes(conn, tz, settings, bad)
    held, oldest = 0, None
    if schema.has_locks:
        for lock_key, locked_at in conn.execute(f"SELECT lock_key, locked_at FROM {LOCKS}"):
            held += 1
            # CURRENT_TIMESTAMP: UTC, whatever the writer's zone.
            at = _instant(locked_at, UTC, LOCKS, "locked_at", str(lock_key), bad)
            if at is not None and (oldest is None or at < oldest):
                oldest = at
    return Snapshot(now, tuple(running), tuple(stuck_nodes(running, now)), held, oldest, tuple(bad))


def _intervals(raw: object, column: str, key: str, bad: list[BadValue]) -> int:
    if raw is None or raw == "":
        return 0
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, list):
        bad.append(BadValue(NODES, column, key, shown(raw)))
        return 0
    return len(parsed)


def aggregates(conn: sqlite3.Connection, schema: Schema, tz: tzinfo, now: datetime) -> Aggregates:
    bad: list[BadValue] = []
    intervals = "completed_intervals_json, restatement_intervals_json" if schema.has_intervals else "NULL, NULL"
    sql = f"SELECT id, run_id, node_id, last_run, status, duration_ms, row_count, {intervals} FROM {NODES} ORDER BY id"
    first_seen: dict[str, float] = {}
    executions: Counter[tuple[str, str]] = Counter()
    seen: set[tuple[str, str]] = set()
    durations: dict[str, Histogram] = {}
    last_success: dict[str, float] = {}
    latest_execution: dict[str, tuple[float, float]] = {}  # node -> (last_run, row_count)
    latest_row: dict[str, tuple[float, int, int, int]] = {}  # node -> (last_run, id, completed, restatement)
    for row_id, run_id, node_id, last_run, status, duration_ms, row_count, completed, restatement in conn.execute(sql):
        key = f"{run_id}:{node_id}"
        raw_status = node_status(status)
        state, node = label_text(raw_status), label_text(node_id)
        if state is None or node is None:
            if isinstance(status, str) and isinstance(node_id, str):  # the counts tier counts the rest
                bad.append(BadValue(NODES, "status" if state is None else "node_id", key, shown(status or node_id)))
            continue
        written = _instant(last_run, tz, NODES, "last_run", key, bad)
        if written is None:
            continue
        first_seen[node] = min(first_seen.get(node, written), written)
        latest = latest_row.get(node)
        if latest is None or (written, row_id) > latest[:2]:
            latest_row[node] = (
                written,
                int(row_id),
                _intervals(completed, "completed_intervals_json", key, bad),
                _intervals(restatement, "restatement_intervals_json", key, bad),
            )
        if state == SUCCESS:
            last_success[node] = max(last_success.get(node, written), written)
        if state not in FINISHED_NODE_STATUSES or (node, str(last_run)) in seen:
            continue  # carried over from an earlier run: that execution is already counted
        seen.add((node, str(last_run)))
        executions[(node, state)] += 1
        ms = duration_ms if isinstance(duration_ms, int | float) else 0
        durations.setdefault(node, Histogram(NODE_DURATION_BUCKETS)).observe(ms / 1000)
        if node not in latest_execution or written >= latest_execution[node][0]:
            rows = row_count if isinstance(row_count, int | float) else 0
            latest_execution[node] = (written, float(rows))
    return Aggregates(
        taken_at=now,
        node_order=tuple(sorted(first_seen, key=lambda n: (first_seen[n], n))),
        executions=executions,
        durations=durations,
        last_success=last_success,
        rows_processed={node: rows for node, (_, rows) in latest_execution.items()},
        completed_intervals={node: row[2] for node, row in latest_row.items()},
        restatement_pending={node: row[3] for node, row in latest_row.items()},
        bad_values=tuple(bad),
    )


def counts(conn: sqlite3.Connection, schema: Schema, tz: tzinfo, now: datetime) -> Counts:
    """Runs by the status derived from their nodes; a run with a node whose status or id is not
    text cannot be derived and is left out (counted as bad values)."""
    bad: list[BadValue] = []
    sql = (
        f"SELECT r.run_id, r.last_run, n.failed, n.active, n.bad_status, n.bad_node FROM {RUNS} r LEFT JOIN "
        f"(SELECT run_id, MAX(status = '{FAILED}') AS failed, "
        f"MAX(status IS NULL OR status IN ('{RUNNING}', '{PENDING}')) AS active, "
        f"SUM(typeof(status) NOT IN ('text', 'null')) AS bad_status, SUM(typeof(node_id) != 'text') AS bad_node "
        f"FROM {NODES} GROUP BY run_id) n ON n.run_id = r.run_id"
    )
    by_status: Counter[str] = Counter()
    active: dict[str, float | None] = {}  # running run -> its own last_run
    latest: tuple[float, str] | None = None
    for run_id, last_run, failed, running, bad_status, bad_node in conn.execute(sql):
        run = str(run_id)
        if bad_status or bad_node:
            if bad_status:
                bad.append(BadValue(NODES, "status", run, "not text", int(bad_status)))
            if bad_node:
                bad.append(BadValue(NODES, "node_id", run, "not text", int(bad_node)))
            continue
        status = FAILED if failed else RUNNING if running else SUCCESS
        by_status[status] += 1
        written = _instant(last_run, tz, RUNS, "last_run", run, bad)
        if status == RUNNING:
            active[run] = written
        if written is not None and (latest is None or (written, run) > latest):
            latest = (written, run)
    latest_nodes: Counter[tuple[str, str]] = Counter()
    if latest is not None:
        for node_id, status in conn.execute(f"SELECT node_id, status FROM {NODES} WHERE run_id = ?", (latest[1],)):
            state, node = label_text(node_status(status)), label_text(node_id)
            if state is None or node is None:
                bad.append(BadValue(NODES, "status" if state is None else "node_id", latest[1], shown(status)))
                continue
            latest_nodes[(node_kind(node), state)] += 1
    return Counts(
        taken_at=now,
        runs_by_status=by_status,
        latest_run=None if latest is None else latest[1],
        latest_nodes=latest_nodes,
        oldest_active_update=_oldest_active(conn, active, tz, bad),
        bad_values=tuple(bad),
    )


def _oldest_active(
    conn: sqlite3.Connection, runs: dict[str, float | None], tz: tzinfo, bad: list[BadValue]
) -> float | None:
    """The newest write (run or node ``last_run``) of each running run; the oldest of those."""
    oldest: float | None = None
    for run, written in runs.items():
        writes = [] if written is None else [written]
        for (raw,) in conn.execute(f"SELECT last_run FROM {NODES} WHERE run_id = ?", (run,)):
            at = _instant(raw, tz, NODES, "last_run", run, bad)
            if at is not None:
                writes.append(at)
        if writes and (oldest is None or max(writes) < oldest):
            oldest = max(writes)
    return oldest
