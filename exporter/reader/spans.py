"""Queries on the stored ``spans`` table (0.4.35 and 0.6.x; the shapes differ, the columns used don't)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class SpanTotals:
    total: int
    unfinished: int
    by_status: Counter[str]


def total(conn: sqlite3.Connection) -> int:
    """Cheap: SQLite counts the smallest index."""
    return int(conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0])


def totals(conn: sqlite3.Connection) -> SpanTotals:
    """Spans by status and unfinished (no end time).  Scans the table: aggregate tier only."""
    by_status: Counter[str] = Counter()
    unfinished = 0
    for status, count, open_count in conn.execute(
        "SELECT COALESCE(status, 'unknown'), COUNT(*), SUM(end_time IS NULL) FROM spans GROUP BY 1"
    ):
        by_status[status] = count
        unfinished += int(open_count or 0)
    return SpanTotals(sum(by_status.values()), unfinished, by_status)


def per_run(conn: sqlite3.Connection, with_runs_table: bool) -> dict[str, int]:
    """Stored spans per run, including runs with none (crashed runs have no spans)."""
    counts = {run_id: n for run_id, n in conn.execute("SELECT run_id, COUNT(*) FROM spans GROUP BY run_id")}
    if with_runs_table:
        for (run_id,) in conn.execute("SELECT run_id FROM runs"):
            counts.setdefault(run_id, 0)
    return counts
