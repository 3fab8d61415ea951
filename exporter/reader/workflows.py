"""Queries on ``workflow_state``: statuses, 24 h windows and the active (running/paused) rows.

All of them are bounded by an index: the status index, the created_at index (range pre-filter
from :func:`text_lower_bound`, then exact instants in Python) or the parent_run_id index for
background tasks.  Top-level workflows and background tasks are always counted apart.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from exporter.reader.badvalues import BadValue
from exporter.reader.layout import Capability, Schema
from exporter.timeparse import TimestampError, parse_instant, text_lower_bound, text_upper_bound

WORKFLOW_STATUSES = ("running", "paused", "completed", "failed", "cancelled")
ACTIVE_STATUSES = ("running", "paused")
UNKNOWN_PIPELINE = "unknown"


@dataclass(frozen=True)
class ActiveWorkflow:
    """A running or paused row.  ``run_id`` is for alerts and logs only, never a metric label."""

    run_id: str
    pipeline: str
    status: str
    updated_at: datetime | None
    is_background: bool


@dataclass(frozen=True)
class WindowCounts:
    top_level: int
    background: int


def status_counts(conn: sqlite3.Connection, schema: Schema) -> tuple[Counter[str], Counter[str] | None]:
    """(top-level counts, background-task counts or None when the layout has no background tasks)."""
    every = Counter[str](
        {row[0]: row[1] for row in conn.execute("SELECT status, COUNT(*) FROM workflow_state GROUP BY status")}
    )
    if not schema.supports(Capability.BACKGROUND_TASKS):
        return every, None
    background = Counter[str]({row[0]: row[1] for row in conn.execute(_BACKGROUND_STATUS_SQL)})
    return every - background, background


# Background rows always carry their parent's run id, so the parent_run_id index bounds this.
_BACKGROUND_STATUS_SQL = (
    "SELECT status, COUNT(*) FROM workflow_state"
    " WHERE parent_run_id IS NOT NULL AND COALESCE(is_background_task, 0) != 0 GROUP BY status"
)


def created_since(
    conn: sqlite3.Connection, schema: Schema, since: datetime, naive_tz: tzinfo, bad: list[BadValue]
) -> WindowCounts:
    # rowid, not run_id: on layouts without background tasks the created_at index alone answers.
    rows = conn.execute(
        f"SELECT rowid, created_at, {_background_expr(schema)} FROM workflow_state WHERE created_at >= ?",
        (text_lower_bound(since),),
    )
    found: list[BadValue] = []
    counts = _count_since(rows, since, naive_tz, "created_at", found)
    for value in found:
        row = conn.execute("SELECT run_id FROM workflow_state WHERE rowid = ?", (value.run_id,)).fetchone()
        bad.append(BadValue(value.table, value.column, str(row[0]) if row else f"rowid {value.run_id}", value.value))
    return counts


def failed_since(
    conn: sqlite3.Connection, schema: Schema, since: datetime, naive_tz: tzinfo, bad: list[BadValue]
) -> WindowCounts:
    rows = conn.execute(
        f"SELECT run_id, updated_at, {_background_expr(schema)} FROM workflow_state"
        " WHERE status = 'failed' AND updated_at >= ?",
        (text_lower_bound(since),),
    )
    return _count_since(rows, since, naive_tz, "updated_at", bad)


def _count_since(
    rows: Iterable[tuple[str, object, int]],
    since: datetime,
    naive_tz: tzinfo,
    column: str,
    bad: list[BadValue],
) -> WindowCounts:
    top = background = 0
    for run_id, raw, is_background in rows:
        try:
            instant = parse_instant(raw, naive_tz)
        except TimestampError:
            bad.append(BadValue("workflow_state", column, str(run_id), str(raw)))
            continue
        if instant is not None and instant >= since:
            if is_background:
                background += 1
            else:
                top += 1
    return WindowCounts(top, background)


ActiveRow = tuple[str, str, str, object, int]  # run_id, pipeline, status, raw updated_at, is_background


def active_rows(conn: sqlite3.Connection, schema: Schema) -> Iterator[ActiveRow]:
    """Running and paused rows, streamed (there can be tens of thousands of crashed runs)."""
    for _rowid, *row in conn.execute(_active_sql(schema, "ws.status IN ('running', 'paused')")):
        yield _active_row(row)


def active_rows_by_rowid(
    conn: sqlite3.Connection, schema: Schema, rowids: Sequence[int]
) -> Iterator[tuple[int, ActiveRow]]:
    for start in range(0, len(rowids), 500):
        chunk = rowids[start : start + 500]
        where = f"ws.rowid IN ({','.join('?' * len(chunk))}) AND ws.status IN ('running', 'paused')"
        for rowid, *row in conn.execute(_active_sql(schema, where), chunk):
            yield int(rowid), _active_row(row)


def _active_sql(schema: Schema, where: str) -> str:
    """The pipeline comes from ``runs`` only where workflow_state says 'unknown' (flujo's default
    context has no pipeline name), so the common case costs no extra lookup."""
    pipeline = f"ws.{schema.pipeline_column}"
    if schema.has("runs", "pipeline_name"):
        pipeline = (
            f"CASE WHEN COALESCE({pipeline}, '') IN ('', '{UNKNOWN_PIPELINE}') THEN COALESCE("
            f"(SELECT r.pipeline_name FROM runs r WHERE r.run_id = ws.run_id), '{UNKNOWN_PIPELINE}')"
            f" ELSE {pipeline} END"
        )
    return (
        f"SELECT ws.rowid, ws.run_id, {pipeline}, ws.status, ws.updated_at, {_background_expr(schema, 'ws.')}"
        f" FROM workflow_state ws WHERE {where}"
    )


def _active_row(row: list[Any]) -> ActiveRow:
    run_id, name, status, updated, background = row
    return str(run_id), _pipeline(name, None), str(status), updated, int(background)


def active_workflows(
    conn: sqlite3.Connection, schema: Schema, naive_tz: tzinfo, bad: list[BadValue]
) -> list[ActiveWorkflow]:
    """Running and paused rows with parsed times (for alerts and tests; metrics use a summary)."""
    result: list[ActiveWorkflow] = []
    for run_id, pipeline, status, updated_raw, is_background in active_rows(conn, schema):
        try:
            updated_at = parse_instant(updated_raw, naive_tz)
        except TimestampError:
            bad.append(BadValue("workflow_state", "updated_at", run_id, str(updated_raw)))
            updated_at = None
        result.append(ActiveWorkflow(run_id, pipeline, status, updated_at, bool(is_background)))
    return result


def created_before(conn: sqlite3.Connection, cutoff: datetime, naive_tz: tzinfo, bad: list[BadValue]) -> list[str]:
    """Run ids whose ``created_at`` is before ``cutoff`` (what time-correct cleanup would delete)."""
    found = []
    for run_id, raw in conn.execute(
        "SELECT run_id, created_at FROM workflow_state WHERE created_at < ?", (text_upper_bound(cutoff),)
    ):
        try:
            instant = parse_instant(raw, naive_tz)
        except TimestampError:
            bad.append(BadValue("workflow_state", "created_at", run_id, str(raw)))
            continue
        if instant is not None and instant < cutoff:
            found.append(run_id)
    return found


def pipeline_status_counts(conn: sqlite3.Connection, schema: Schema) -> Counter[tuple[str, str]]:
    """Top-level workflows per (pipeline, status).  Scans the table: aggregate tier only."""
    where = " WHERE COALESCE(is_background_task, 0) = 0" if schema.supports(Capability.BACKGROUND_TASKS) else ""
    rows = conn.execute(f"SELECT {schema.pipeline_column}, status, COUNT(*) FROM workflow_state{where} GROUP BY 1, 2")
    return Counter({(_pipeline(p, None), s): n for p, s, n in rows})


def average_execution_time_ms(conn: sqlite3.Connection, schema: Schema) -> float:
    """flujo's ``average_execution_time_ms`` (AVG over non-NULL rows, 0 when none).  Scans the table."""
    if not schema.has("workflow_state", "execution_time_ms"):
        return 0.0
    value = conn.execute("SELECT AVG(execution_time_ms) FROM workflow_state").fetchone()[0]
    return float(value or 0.0)


def window_start(now: datetime, hours: float) -> datetime:
    return now - timedelta(hours=hours)


def _background_expr(schema: Schema, prefix: str = "") -> str:
    if schema.supports(Capability.BACKGROUND_TASKS):
        return f"COALESCE({prefix}is_background_task, 0) != 0"
    return "0"


def _pipeline(ws_pipeline: object, runs_pipeline: object) -> str:
    for candidate in (ws_pipeline, runs_pipeline):
        if isinstance(candidate, str) and candidate and candidate != UNKNOWN_PIPELINE:
            return candidate
    return UNKNOWN_PIPELINE
