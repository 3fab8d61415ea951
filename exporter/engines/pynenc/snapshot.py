"""The refresh tiers over a pynenc file, per app, each in one short read transaction.

* *snapshot* (every refresh): pynenc's two stuck rules, runners alive or dead, the broker queue;
  all through the status index or over tables that stay small (runners, queued messages);
* *counts* (every ``metrics.counts_interval``): invocations by task and status, and top-level
  invocations (no parent) by status for the overview.

The current status is the orchestrator's ``invocations.status`` (written atomically on every
transition); a file with the state backend's tables only falls back to each invocation's latest
history row.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from exporter.engines.pynenc.layout import (
    BROKER,
    HEARTBEATS,
    HISTORY,
    INVOCATIONS,
    RUNNER_CONTEXTS,
    SB_INVOCATIONS,
    AppTables,
    Schema,
)
from exporter.engines.pynenc.statuses import ACTIVE_STATUSES, PENDING, RUNNING, sql_list
from exporter.engines.pynenc.values import UNKNOWN, AppConfig, app_config, epoch, julian_to_epoch
from exporter.labels import label_text
from exporter.model import StuckReason
from exporter.reader.badvalues import BadValue, shown

STUCK_REASONS = (StuckReason.RUNNER_DEAD, StuckReason.PENDING_TIMEOUT)
ALIVE, DEAD = "alive", "dead"
DEFAULT_QUEUE = "default"  # before 0.4.0 the broker has one queue
NUMERIC = "typeof({col}) IN ('real', 'integer')"


@dataclass(frozen=True)
class Queue:
    depth: int
    oldest: float | None  # Unix time of its oldest message


@dataclass(frozen=True)
class AppSnapshot:
    app: str
    layout: str
    config: AppConfig
    stuck: Counter[StuckReason]  # every reason, 0 when none
    runners: Counter[str]  # alive / dead
    last_heartbeat: dict[str, float]  # runner class -> latest heartbeat of a runner of that class
    queues: dict[str, Queue]
    oldest_active_update: float | None  # top-level invocations not final


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    apps: tuple[AppSnapshot, ...]
    bad_values: tuple[BadValue, ...] = field(default=())


@dataclass(frozen=True)
class AppCounts:
    app: str
    layout: str
    statuses: tuple[str, ...]  # the layout's vocabulary
    by_task_status: Counter[tuple[str, str]]  # every invocation
    runs_by_status: Counter[str]  # top-level invocations


@dataclass(frozen=True)
class Counts:
    taken_at: datetime
    apps: tuple[AppCounts, ...]
    bad_values: tuple[BadValue, ...] = field(default=())


@dataclass(frozen=True)
class Aggregates:
    """pynenc needs no whole-table scan beyond the counts: an empty tier."""

    taken_at: datetime
    bad_values: tuple[BadValue, ...] = field(default=())


def snapshot(conn: sqlite3.Connection, schema: Schema, now: datetime) -> Snapshot:
    bad: list[BadValue] = []
    apps = []
    for app in schema.apps:
        config = app_config(conn, app)
        bad.extend(config.bad)
        apps.append(_app_snapshot(conn, app, config, now.timestamp(), bad))
    return Snapshot(now, tuple(apps), tuple(bad))


def _app_snapshot(
    conn: sqlite3.Connection, app: AppTables, config: AppConfig, now: float, bad: list[BadValue]
) -> AppSnapshot:
    stuck: Counter[StuckReason] = Counter(dict.fromkeys(STUCK_REASONS, 0))
    dead_before = now - config.runner_dead_after_minutes * 60
    oldest: float | None = None
    if app.has(INVOCATIONS):
        stuck[StuckReason.RUNNER_DEAD] = _running_on_dead_runners(conn, app, dead_before, bad)
        stuck[StuckReason.PENDING_TIMEOUT] = _pending_too_long(conn, app, now - config.max_pending_seconds, bad)
        oldest = _oldest_active_top_level(conn, app)
    runners, last_heartbeat = _runners(conn, app, dead_before, bad)
    return AppSnapshot(
        app=config.label,
        layout=app.layout.value,
        config=config,
        stuck=stuck,
        runners=runners,
        last_heartbeat=last_heartbeat,
        queues=_queues(conn, app, bad),
        oldest_active_update=oldest,
    )


def _running_on_dead_runners(conn: sqlite3.Connection, app: AppTables, dead_before: float, bad: list[BadValue]) -> int:
    return len(running_on_dead_runners(conn, app, dead_before, bad))


def running_on_dead_runners(
    conn: sqlite3.Connection, app: AppTables, dead_before: float, bad: list[BadValue]
) -> list[tuple[str, float, float | None]]:
    """pynenc's ``get_running_invocations_for_recovery``: running, owned by a runner that has no
    heartbeat row or whose last heartbeat is older than the app's threshold.  Returns (invocation
    id, status time, last heartbeat or ``None``) per such invocation."""
    if app.has(HEARTBEATS):
        sql = (
            f"SELECT i.invocation_id, i.status_timestamp, h.runner_id IS NOT NULL, h.last_heartbeat "
            f"FROM {app.q(INVOCATIONS)} i LEFT JOIN {app.q(HEARTBEATS)} h ON h.runner_id = i.status_runner_id "
            f"WHERE i.status = '{RUNNING}' AND i.status_runner_id IS NOT NULL"
        )
    else:
        sql = (
            f"SELECT invocation_id, status_timestamp, 0, NULL FROM {app.q(INVOCATIONS)} "
            f"WHERE status = '{RUNNING}' AND status_runner_id IS NOT NULL"
        )
    dead: list[tuple[str, float, float | None]] = []
    for invocation_id, since, has_heartbeat, last in conn.execute(sql):
        status_time = epoch(since) or 0.0
        if not has_heartbeat:
            dead.append((str(invocation_id), status_time, None))
            continue
        heartbeat = epoch(last)
        if heartbeat is None:
            bad.append(BadValue(app.name(HEARTBEATS), "last_heartbeat", str(invocation_id), shown(last)))
        elif heartbeat < dead_before:
            dead.append((str(invocation_id), status_time, heartbeat))
    return dead


def _pending_too_long(conn: sqlite3.Connection, app: AppTables, limit: float, bad: list[BadValue]) -> int:
    """pynenc's ``get_pending_invocations_for_recovery``: pending since ``limit`` or before."""
    numeric = NUMERIC.format(col="status_timestamp")
    stuck, unreadable = conn.execute(
        f"SELECT COALESCE(SUM({numeric} AND status_timestamp <= ?), 0), COALESCE(SUM(NOT {numeric}), 0) "
        f"FROM {app.q(INVOCATIONS)} WHERE status = '{PENDING}'",
        (limit,),
    ).fetchone()
    if unreadable:
        bad.append(BadValue(app.name(INVOCATIONS), "status_timestamp", "", "not a number", int(unreadable)))
    return int(stuck)


def pending_too_long(conn: sqlite3.Connection, app: AppTables, limit: float) -> list[tuple[str, float]]:
    """The invocations :func:`_pending_too_long` counts: (invocation id, pending since)."""
    numeric = NUMERIC.format(col="status_timestamp")
    sql = (
        f"SELECT invocation_id, status_timestamp FROM {app.q(INVOCATIONS)} "
        f"WHERE status = '{PENDING}' AND {numeric} AND status_timestamp <= ?"
    )
    return [(str(invocation_id), float(since)) for invocation_id, since in conn.execute(sql, (limit,))]


def _oldest_active_top_level(conn: sqlite3.Connection, app: AppTables) -> float | None:
    numeric = NUMERIC.format(col="i.status_timestamp")
    if app.has(SB_INVOCATIONS):
        sql = (
            f"SELECT MIN(i.status_timestamp) FROM {app.q(INVOCATIONS)} i "
            f"LEFT JOIN {app.q(SB_INVOCATIONS)} s ON s.invocation_id = i.invocation_id "
            f"WHERE i.status IN {sql_list(ACTIVE_STATUSES)} AND s.parent_invocation_id IS NULL AND {numeric}"
        )
    else:
        sql = (
            f"SELECT MIN(i.status_timestamp) FROM {app.q(INVOCATIONS)} i "
            f"WHERE i.status IN {sql_list(ACTIVE_STATUSES)} AND {numeric}"
        )
    return epoch(conn.execute(sql).fetchone()[0])


def _runners(
    conn: sqlite3.Connection, app: AppTables, dead_before: float, bad: list[BadValue]
) -> tuple[Counter[str], dict[str, float]]:
    """Runners by pynenc's ``get_active_runners`` rule, and the latest heartbeat per runner class."""
    states: Counter[str] = Counter({ALIVE: 0, DEAD: 0})
    latest: dict[str, float] = {}
    if not app.has(HEARTBEATS):
        return states, latest
    if app.has(RUNNER_CONTEXTS):
        sql = (
            f"SELECT h.runner_id, h.last_heartbeat, c.runner_cls FROM {app.q(HEARTBEATS)} h "
            f"LEFT JOIN {app.q(RUNNER_CONTEXTS)} c ON c.runner_id = h.runner_id"
        )
    else:
        sql = f"SELECT runner_id, last_heartbeat, NULL FROM {app.q(HEARTBEATS)}"
    for runner_id, last, runner_cls in conn.execute(sql):
        heartbeat = epoch(last)
        if heartbeat is None:
            bad.append(BadValue(app.name(HEARTBEATS), "last_heartbeat", str(runner_id), shown(last)))
            continue
        states[ALIVE if heartbeat >= dead_before else DEAD] += 1
        cls = UNKNOWN if runner_cls is None else label_text(runner_cls)
        if cls is None:
            bad.append(BadValue(app.name(RUNNER_CONTEXTS), "runner_cls", str(runner_id), shown(runner_cls)))
            continue
        latest[cls] = max(latest.get(cls, heartbeat), heartbeat)
    return states, latest


def _queues(conn: sqlite3.Connection, app: AppTables, bad: list[BadValue]) -> dict[str, Queue]:
    if not app.has(BROKER):
        return {}
    numeric = NUMERIC.format(col="created_at")
    queue = "queue_name" if app.has(BROKER, "queue_name") else f"'{DEFAULT_QUEUE}'"
    queues: dict[str, Queue] = {}
    sql = (
        f"SELECT {queue}, COUNT(*), MIN(CASE WHEN {numeric} THEN created_at END), "
        f"COALESCE(SUM(NOT {numeric}), 0) FROM {app.q(BROKER)} GROUP BY 1"
    )
    for name, depth, oldest, unreadable in conn.execute(sql):
        if unreadable:
            bad.append(BadValue(app.name(BROKER), "created_at", "", "not a number", int(unreadable)))
        label = label_text(name)
        if label is None:
            bad.append(BadValue(app.name(BROKER), "queue_name", "", shown(name), int(depth)))
            continue
        queues[label] = Queue(int(depth), julian_to_epoch(oldest))
    queues.setdefault(DEFAULT_QUEUE, Queue(0, None))  # an idle broker still shows its depth
    return queues


def counts(conn: sqlite3.Connection, schema: Schema, now: datetime) -> Counts:
    bad: list[BadValue] = []
    apps = []
    for app in schema.apps:
        config = app_config(conn, app)
        bad.extend(config.bad)
        by_task: Counter[tuple[str, str]] = Counter()
        runs: Counter[str] = Counter()
        groups, task_table, status_table, status_column = _status_groups(conn, app)
        for task, status, top_level, n in groups:
            task_label, status_label = label_text(task), label_text(status)
            if status_label is None:
                bad.append(BadValue(status_table, status_column, "", shown(status), int(n)))
                continue
            if task_label is None:
                bad.append(BadValue(task_table, "task_id_key", "", shown(task), int(n)))
                continue
            by_task[(task_label, status_label)] += int(n)
            if top_level:
                runs[status_label] += int(n)
        apps.append(AppCounts(config.label, app.layout.value, app.layout.statuses, by_task, runs))
    return Counts(now, tuple(apps), tuple(bad))


def _status_groups(conn: sqlite3.Connection, app: AppTables) -> tuple[list[sqlite3.Row], str, str, str]:
    """(task, status, top-level, count) groups; the tables and column they come from."""
    parent = (
        f"LEFT JOIN {app.q(SB_INVOCATIONS)} s ON s.invocation_id = c.invocation_id" if app.has(SB_INVOCATIONS) else ""
    )
    top = "s.parent_invocation_id IS NULL" if parent else "1"
    if app.has(INVOCATIONS):
        sql = f"SELECT c.task_id_key, c.status, {top}, COUNT(*) FROM {app.q(INVOCATIONS)} c {parent} GROUP BY 1, 2, 3"
        table = app.name(INVOCATIONS)
        return conn.execute(sql).fetchall(), table, table, "status"
    if not parent:
        return [], "", "", ""  # history without either invocations table: no task to count by
    # The latest transition of each invocation (SQLite takes the bare column from the MAX row).
    sql = (
        f"SELECT s.task_id_key, c.history_status, {top}, COUNT(*) FROM "
        f"(SELECT invocation_id, history_status, MAX(history_timestamp) FROM {app.q(HISTORY)} "
        f"GROUP BY invocation_id) c {parent} GROUP BY 1, 2, 3"
    )
    return conn.execute(sql).fetchall(), app.name(SB_INVOCATIONS), app.name(HISTORY), "history_status"
