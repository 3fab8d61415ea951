"""The refresh tiers over a seeknal state DB, each in one short read transaction.

* *snapshot* (every refresh): running nodes and the stuck rule (through the status index), locks;
* *counts* (every ``metrics.counts_interval``): runs by derived status, the latest run's nodes,
  executions, durations, freshness and intervals, from one pass over ``node_state``.

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
from exporter.engines.seeknal.statuses import FINISHED_NODE_STATUSES, RUNNING, SUCCESS, node_status, run_status
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
    node_order: tuple[str, ...]  # node ids by first execution: the label cap keeps the first ones
    executions: Counter[tuple[str, str]]  # (node_id, final status), one per (node_id, last_run)
    durations: dict[str, Histogram]
    last_success: dict[str, float]
    rows_processed: dict[str, float]  # row_count of each node's latest execution
    completed_intervals: dict[str, int]  # from each node's latest row
    restatement_pending: dict[str, int]
    oldest_active_update: float | None  # the longest-idle running run's newest write
    bad_values: tuple[BadValue, ...] = field(default=())


@dataclass(frozen=True)
class Aggregates:
    """seeknal needs no whole-table scan beyond the counts: an empty tier."""

    taken_at: datetime
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


def counts(conn: sqlite3.Connection, schema: Schema, tz: tzinfo, now: datetime) -> Counts:
    bad: list[BadValue] = []
    runs: dict[str, float | None] = {}
    for run_id, last_run in conn.execute(f"SELECT run_id, last_run FROM {RUNS}"):
        runs[str(run_id)] = _instant(last_run, tz, RUNS, "last_run", str(run_id), bad)
    intervals = "completed_intervals_json, restatement_intervals_json" if schema.has_intervals else "NULL, NULL"
    sql = f"SELECT id, run_id, node_id, last_run, status, duration_ms, row_count, {intervals} FROM {NODES} ORDER BY id"
    run_nodes: dict[str, list[tuple[str, str, float | None]]] = {}
    spoiled: set[str] = set()  # runs with a node whose status cannot be read: no status to derive
    first_seen: dict[str, float] = {}
    executions: Counter[tuple[str, str]] = Counter()
    seen: set[tuple[str, str]] = set()
    durations: dict[str, Histogram] = {}
    last_success: dict[str, float] = {}
    latest_execution: dict[str, tuple[float, float]] = {}  # node -> (last_run, row_count)
    latest_row: dict[str, tuple[float, int, int, int]] = {}  # node -> (last_run, id, completed, restatement)
    for row_id, run_id, node_id, last_run, status, duration_ms, row_count, completed, restatement in conn.execute(sql):
        run, key = str(run_id), f"{run_id}:{node_id}"
        raw_status = node_status(status)
        state, node = label_text(raw_status), label_text(node_id)
        if state is None:
            bad.append(BadValue(NODES, "status", key, shown(status)))
            spoiled.add(run)
            continue
        if node is None:
            bad.append(BadValue(NODES, "node_id", key, shown(node_id)))
            spoiled.add(run)
            continue
        written = _instant(last_run, tz, NODES, "last_run", key, bad)
        run_nodes.setdefault(run, []).append((node, state, written))
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
    by_status: Counter[str] = Counter()
    oldest_active: float | None = None
    latest_run: tuple[float, str] | None = None
    for run, written in runs.items():
        if run in spoiled:
            continue
        nodes = run_nodes.get(run, [])
        status = run_status(state for _, state, _ in nodes)
        by_status[status] += 1
        if status == RUNNING:
            writes = [w for _, _, w in nodes if w is not None] + ([written] if written is not None else [])
            if writes and (oldest_active is None or max(writes) < oldest_active):
                oldest_active = max(writes)
        if written is not None and (latest_run is None or (written, run) > latest_run):
            latest_run = (written, run)
    latest_nodes: Counter[tuple[str, str]] = Counter()
    if latest_run is not None:
        for node, state, _ in run_nodes.get(latest_run[1], []):
            latest_nodes[(node_kind(node), state)] += 1
    return Counts(
        taken_at=now,
        runs_by_status=by_status,
        latest_run=None if latest_run is None else latest_run[1],
        latest_nodes=latest_nodes,
        node_order=tuple(sorted(first_seen, key=lambda n: (first_seen[n], n))),
        executions=executions,
        durations=durations,
        last_success=last_success,
        rows_processed={node: rows for node, (_, rows) in latest_execution.items()},
        completed_intervals={node: row[2] for node, row in latest_row.items()},
        restatement_pending={node: row[3] for node, row in latest_row.items()},
        oldest_active_update=oldest_active,
        bad_values=tuple(bad),
    )
