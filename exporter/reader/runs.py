"""Queries on ``runs`` and ``steps`` (absent in the 0.4.32 legacy layout).

Whole-history breakdowns scan the table and belong to the aggregate tier.  Finished runs and
steps are instead followed incrementally by ``rowid``: a row keeps its rowid when flujo UPDATEs
it at the end of a run, so "rows after the last rowid seen" plus "rows seen running before" is an
index-bound way to observe every finish exactly once, whatever cleanup deletes later.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from exporter.reader.layout import Schema
from exporter.timeparse import TimestampError, parse_instant, text_lower_bound

FINISHED_RUN_STATUSES = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class RunRow:
    rowid: int
    run_id: str
    pipeline: str
    status: str
    ended_at: datetime | None  # None while running or when the time is missing/unparseable
    duration_s: float | None


@dataclass(frozen=True)
class StepRow:
    rowid: int
    step_name: str
    status: str
    ended_at: datetime | None  # when the row was recorded, right after the step
    duration_s: float | None


def status_counts(conn: sqlite3.Connection) -> Counter[str]:
    return Counter({s: n for s, n in conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status")})


def pipeline_status_counts(conn: sqlite3.Connection) -> Counter[tuple[str, str]]:
    """Runs per (pipeline_name, status).  Scans the table: aggregate tier only."""
    rows = conn.execute("SELECT pipeline_name, status, COUNT(*) FROM runs GROUP BY 1, 2")
    return Counter({(p or "unknown", s): n for p, s, n in rows})


def max_rowid(conn: sqlite3.Connection, table: str) -> int:
    if table not in ("runs", "steps"):
        raise ValueError(table)
    return int(conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {table}").fetchone()[0])


def runs_after(conn: sqlite3.Connection, schema: Schema, rowid: int, limit: int) -> list[RunRow]:
    sql = f"{_run_select(schema)} WHERE rowid > ? ORDER BY rowid LIMIT ?"
    return [_run_row(row) for row in conn.execute(sql, (rowid, limit))]


def runs_by_rowid(conn: sqlite3.Connection, schema: Schema, rowids: Sequence[int]) -> list[RunRow]:
    found: list[RunRow] = []
    for start in range(0, len(rowids), 500):
        chunk = rowids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        found.extend(_run_row(row) for row in conn.execute(f"{_run_select(schema)} WHERE rowid IN ({marks})", chunk))
    return found


def finished_counts(conn: sqlite3.Connection, up_to_rowid: int) -> list[tuple[str, str, int]]:
    """Finished runs per (pipeline, status), biggest first (so label caps keep the busiest)."""
    marks = ", ".join("?" * len(FINISHED_RUN_STATUSES))
    sql = (
        "SELECT COALESCE(pipeline_name, 'unknown'), status, COUNT(*) FROM runs NOT INDEXED"
        f" WHERE rowid <= ? AND status IN ({marks}) GROUP BY 1, 2 ORDER BY 3 DESC"
    )
    return [(p, s, int(n)) for p, s, n in conn.execute(sql, (up_to_rowid, *FINISHED_RUN_STATUSES))]


def running_rowids(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    """(rowid, run_id) of running rows: rowids come from the status index alone."""
    return [(int(r), str(i)) for r, i in conn.execute("SELECT rowid, run_id FROM runs WHERE status = 'running'")]


def runs_started_since(conn: sqlite3.Connection, schema: Schema, since: datetime, up_to_rowid: int) -> list[RunRow]:
    """Runs started within a day before ``since`` or later (bounded by the start-time index)."""
    bound = text_lower_bound(since - timedelta(days=1))
    sql = f"{_run_select(schema)} WHERE {schema.run_start_expr} >= ? AND rowid <= ?"
    return [_run_row(row) for row in conn.execute(sql, (bound, up_to_rowid))]


def step_counts(conn: sqlite3.Connection, up_to_rowid: int) -> list[tuple[str, str, int]]:
    sql = (
        "SELECT COALESCE(step_name, 'unknown'), COALESCE(status, 'unknown'), COUNT(*) FROM steps"
        " WHERE rowid <= ? GROUP BY 1, 2 ORDER BY 3 DESC"
    )
    return [(n, s, int(c)) for n, s, c in conn.execute(sql, (up_to_rowid,))]


def recent_steps(conn: sqlite3.Connection, schema: Schema, up_to_rowid: int, since: datetime) -> list[StepRow]:
    """Steps recorded since ``since``, walking back from the newest rowid (rowids follow insert time;
    the walk stops after a run of older rows, so a few out-of-order rows do not end it early)."""
    found: list[StepRow] = []
    older_in_a_row = 0
    cursor = up_to_rowid + 1
    while older_in_a_row < _OLDER_ROWS_TO_STOP:
        batch = _steps_before(conn, schema, cursor, 2_000)
        if not batch:
            break
        for step in batch:
            cursor = step.rowid
            if step.ended_at is not None and step.ended_at < since:
                older_in_a_row += 1
                continue
            older_in_a_row = 0
            found.append(step)
    return found


_OLDER_ROWS_TO_STOP = 500


def _steps_before(conn: sqlite3.Connection, schema: Schema, rowid: int, limit: int) -> list[StepRow]:
    return _step_rows(conn, schema, "WHERE rowid < ? ORDER BY rowid DESC LIMIT ?", (rowid, limit))


def steps_after(conn: sqlite3.Connection, schema: Schema, rowid: int, limit: int) -> list[StepRow]:
    return _step_rows(conn, schema, "WHERE rowid > ? ORDER BY rowid LIMIT ?", (rowid, limit))


def _step_rows(conn: sqlite3.Connection, schema: Schema, where: str, params: tuple[int, int]) -> list[StepRow]:
    columns = f"rowid, step_name, status, {schema.step_time_expr}, {schema.step_duration_ms_expr}"
    sql = f"SELECT {columns} FROM steps {where}"
    return [
        StepRow(
            r,
            name or "unknown",
            status or "unknown",
            _instant(recorded),
            None if ms is None else max(float(ms), 0.0) / 1000.0,
        )
        for r, name, status, recorded, ms in conn.execute(sql, params)
    ]


def _run_select(schema: Schema) -> str:
    times = f"{schema.run_start_expr}, {schema.run_end_expr}"
    return f"SELECT rowid, run_id, pipeline_name, status, {times} FROM runs"


def _run_row(row: Iterable[object]) -> RunRow:
    rowid, run_id, pipeline, status, start_raw, end_raw = row
    finished = status in FINISHED_RUN_STATUSES
    start, end = _instant(start_raw), _instant(end_raw) if finished else None
    duration = max((end - start).total_seconds(), 0.0) if start and end else None
    return RunRow(
        int(rowid),  # type: ignore[call-overload]
        str(run_id),
        str(pipeline or "unknown"),
        str(status),
        end,
        duration,
    )


def _instant(raw: object) -> datetime | None:
    """runs/steps times are UTC (naive in 0.4.x, '+00:00' in 0.6.x); unparseable reads as unknown."""
    try:
        return parse_instant(raw, UTC)
    except TimestampError:
        return None
