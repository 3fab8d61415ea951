"""Queries on the stored ``spans`` table (0.4.35 and 0.6.x; the shapes differ, the columns used don't)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from exporter.engines.flujo.groups import group_labels
from exporter.reader.badvalues import BadValue
from exporter.reader.sql import Connection


@dataclass(frozen=True)
class SpanTotals:
    total: int  # every row, a bad status included
    unfinished: int  # every row without an end time, a bad status included
    by_status: Counter[str]  # rows whose status is text


def total(conn: Connection) -> int:
    """Cheap: SQLite counts the smallest index."""
    return int(conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0])


def totals(conn: Connection, bad: list[BadValue]) -> SpanTotals:
    """Spans by status and unfinished (no end time).  Scans the table: aggregate tier only.  A status
    that is not text (NULL included: flujo always writes one) is counted as a bad value; the row
    still counts as stored and, without an end time, as unfinished."""
    by_status: Counter[str] = Counter()
    every = unfinished = 0
    for status, count, open_count in conn.execute(
        # CASE, not SUM(end_time IS NULL): Postgres sums no booleans
        "SELECT status, COUNT(*), SUM(CASE WHEN end_time IS NULL THEN 1 ELSE 0 END) FROM spans GROUP BY 1"
    ):
        every += int(count)
        unfinished += int(open_count or 0)
        labels = group_labels((status,), "spans", ("status",), int(count), bad)
        if labels is not None:
            by_status[labels[0]] += int(count)
    return SpanTotals(every, unfinished, by_status)


def per_run(conn: Connection, with_runs_table: bool) -> dict[str, int]:
    """Stored spans per run, including runs with none (crashed runs have no spans)."""
    counts = {run_id: n for run_id, n in conn.execute("SELECT run_id, COUNT(*) FROM spans GROUP BY run_id")}
    if with_runs_table:
        for (run_id,) in conn.execute("SELECT run_id FROM runs"):
            counts.setdefault(run_id, 0)
    return counts
