"""Queries on ``workflow_state``: statuses, 24 h windows and the active (running/paused) rows.

All of them are bounded by an index: the status index, the created_at index (range pre-filter
from :func:`text_lower_bound`, then exact instants in Python) or the parent_run_id index for
background tasks.  Top-level workflows and background tasks are always counted apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from exporter.engines.flujo.dialect import SQLITE, Dialect
from exporter.engines.flujo.groups import grouped_counts, value_counts
from exporter.engines.flujo.layout import Capability, Schema
from exporter.engines.flujo.statuses import ACTIVE_SQL
from exporter.labels import label_text
from exporter.reader.badvalues import BadValue, shown
from exporter.reader.sql import Connection, in_chunks
from exporter.timeparse import TimestampError, not_after, parse_instant

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


def status_counts(conn: Connection, schema: Schema, bad: list[BadValue]) -> tuple[Counter[str], Counter[str] | None]:
    """(top-level counts, background-task counts or None when the layout has no background tasks).
    Rows whose status is not text are left out and counted as bad values."""
    every = value_counts(conn, "workflow_state", "status", bad)
    if not schema.supports(Capability.BACKGROUND_TASKS):
        return every, None
    # Its bad rows are among those just counted: reported once, not twice.
    # Background rows always carry their parent's run id, so the parent_run_id index bounds this.
    where = f" WHERE parent_run_id IS NOT NULL AND {schema.dialect.is_true('is_background_task')}"
    background = value_counts(conn, "workflow_state", "status", [], where=where)
    return every - background, background


def created_since(
    conn: Connection, schema: Schema, since: datetime, now: datetime, naive_tz: tzinfo, bad: list[BadValue]
) -> WindowCounts:
    """Rows whose ``created_at`` is in [since, now]; a later one cannot be a real creation time and
    is counted as a bad value."""
    # rowid, not run_id: on SQLite layouts without background tasks the created_at index alone answers.
    key = schema.dialect.key("workflow_state")
    rows = conn.execute(
        f"SELECT {key}, created_at, {_background_expr(schema)} FROM workflow_state WHERE created_at >= ?",
        (schema.dialect.lower_bound(since),),
    )
    found: list[BadValue] = []
    counts = _count_since(rows, since, now, naive_tz, "created_at", found)
    if not schema.dialect.has_rowid:
        bad.extend(found)  # the key is the run id already
        return counts
    for value in found:
        row = conn.execute("SELECT run_id FROM workflow_state WHERE rowid = ?", (value.run_id,)).fetchone()
        bad.append(BadValue(value.table, value.column, str(row[0]) if row else f"rowid {value.run_id}", value.value))
    return counts


def failed_since(
    conn: Connection, schema: Schema, since: datetime, now: datetime, naive_tz: tzinfo, bad: list[BadValue]
) -> WindowCounts:
    """Failed rows whose ``updated_at`` is in [since, now] (a later one is a bad value)."""
    rows = conn.execute(
        f"SELECT run_id, updated_at, {_background_expr(schema)} FROM workflow_state"
        " WHERE status = 'failed' AND updated_at >= ?",
        (schema.dialect.lower_bound(since),),
    )
    return _count_since(rows, since, now, naive_tz, "updated_at", bad)


def _count_since(
    rows: Iterable[tuple[object, object, int]],
    since: datetime,
    now: datetime,
    naive_tz: tzinfo,
    column: str,
    bad: list[BadValue],
) -> WindowCounts:
    top = background = 0
    for run_id, raw, is_background in rows:
        try:
            instant = parse_instant(raw, naive_tz)
        except TimestampError:
            bad.append(BadValue("workflow_state", column, str(run_id), shown(raw)))
            continue
        if instant is None or instant < since:
            continue
        if not_after(instant, now) is None:
            bad.append(BadValue("workflow_state", column, str(run_id), f"{shown(raw)} (in the future)"))
            continue
        if is_background:
            background += 1
        else:
            top += 1
    return WindowCounts(top, background)


ActiveRow = tuple[str, str, str, object, int]  # run_id, pipeline, status, raw updated_at, is_background


def active_rows(conn: Connection, schema: Schema, bad: list[BadValue]) -> Iterator[ActiveRow]:
    """Running and paused rows, streamed (there can be tens of thousands of crashed runs).  A row
    whose pipeline is not text is left out and counted as a bad value."""
    for _rowid, *row in conn.execute(_active_sql(schema, f"ws.status IN {ACTIVE_SQL}")):
        active = _active_row(row, schema, bad)
        if active is not None:
            yield active


def active_rows_by_rowid(
    conn: Connection, schema: Schema, rowids: Sequence[int], bad: list[BadValue]
) -> Iterator[tuple[int, ActiveRow]]:
    for marks, chunk in in_chunks(rowids):
        where = f"ws.rowid IN ({marks}) AND ws.status IN {ACTIVE_SQL}"
        for rowid, *row in conn.execute(_active_sql(schema, where), chunk):
            active = _active_row(row, schema, bad)
            if active is not None:
                yield int(rowid), active


def _active_sql(schema: Schema, where: str) -> str:
    """The pipeline comes from ``runs`` only where workflow_state says 'unknown' (flujo's default
    context has no pipeline name), so the common case costs no extra lookup.  The fallback is NULL
    when there is no runs row, and an empty BLOB (never a label, so counted as bad) when the runs
    row holds NULL."""
    pipeline = f"ws.{schema.pipeline_column}"
    fallback = "NULL"
    if schema.has("runs", "pipeline_name"):
        fallback = (
            f"CASE WHEN {pipeline} IN ('', '{UNKNOWN_PIPELINE}') THEN"
            f" (SELECT {schema.dialect.not_text('r.pipeline_name')} FROM runs r WHERE r.run_id = ws.run_id) END"
        )
    return (
        f"SELECT {schema.dialect.key('workflow_state', 'ws')}, ws.run_id, {pipeline}, {fallback}, ws.status,"
        f" ws.updated_at, {_background_expr(schema, 'ws.')} FROM workflow_state ws WHERE {where}"
    )


def _active_row(row: list[Any], schema: Schema, bad: list[BadValue]) -> ActiveRow | None:
    run_id, own, fallback, status, updated, background = row
    run_id = str(run_id)
    name = label_text(own)
    if name is None:
        bad.append(BadValue("workflow_state", schema.pipeline_column, run_id, shown(own)))
        return None
    if name in ("", UNKNOWN_PIPELINE) and fallback is not None:
        name = label_text(fallback)
        if name is None:
            bad.append(BadValue("runs", "pipeline_name", run_id, shown(fallback)))
            return None
    return run_id, name or UNKNOWN_PIPELINE, str(status), updated, int(background)


def active_workflows(conn: Connection, schema: Schema, naive_tz: tzinfo, bad: list[BadValue]) -> list[ActiveWorkflow]:
    """Running and paused rows with parsed times (for alerts and tests; metrics use a summary)."""
    result: list[ActiveWorkflow] = []
    for run_id, pipeline, status, updated_raw, is_background in active_rows(conn, schema, bad):
        try:
            updated_at = parse_instant(updated_raw, naive_tz)
        except TimestampError:
            bad.append(BadValue("workflow_state", "updated_at", run_id, shown(updated_raw)))
            updated_at = None
        result.append(ActiveWorkflow(run_id, pipeline, status, updated_at, bool(is_background)))
    return result


def created_before(
    conn: Connection, cutoff: datetime, naive_tz: tzinfo, bad: list[BadValue], dialect: Dialect = SQLITE
) -> list[str]:
    """Run ids whose ``created_at`` is before ``cutoff`` (what time-correct cleanup would delete)."""
    found = []
    for run_id, raw in conn.execute(
        "SELECT run_id, created_at FROM workflow_state WHERE created_at < ?", (dialect.upper_bound(cutoff),)
    ):
        try:
            instant = parse_instant(raw, naive_tz)
        except TimestampError:
            bad.append(BadValue("workflow_state", "created_at", str(run_id), shown(raw)))
            continue
        if instant is not None and instant < cutoff:
            found.append(run_id)
    return found


def pipeline_status_counts(conn: Connection, schema: Schema, bad: list[BadValue]) -> Counter[tuple[str, str]]:
    """Top-level workflows per (pipeline, status).  Scans the table: aggregate tier only."""
    where = ""
    if schema.supports(Capability.BACKGROUND_TASKS):
        where = f" WHERE NOT ({schema.dialect.is_true('is_background_task')})"
    groups = grouped_counts(conn, "workflow_state", (schema.pipeline_column, "status"), bad, where)
    counts: Counter[tuple[str, str]] = Counter()
    for (pipeline, status), n in groups.items():
        counts[(pipeline or UNKNOWN_PIPELINE, status)] += n
    return counts


def average_execution_time_ms(conn: Connection, schema: Schema) -> float:
    """flujo's ``average_execution_time_ms`` (AVG over non-NULL rows, 0 when none).  Scans the table."""
    if not schema.has("workflow_state", "execution_time_ms"):
        return 0.0
    value = conn.execute("SELECT AVG(execution_time_ms) FROM workflow_state").fetchone()[0]
    return float(value or 0.0)


def _background_expr(schema: Schema, prefix: str = "") -> str:
    if schema.supports(Capability.BACKGROUND_TASKS):
        return schema.dialect.is_true(f"{prefix}is_background_task")
    return "0"
