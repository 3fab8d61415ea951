"""The SQL and paging core of Flujo's two write operations, shared by the daemon's jobs
(:mod:`.cleanup`, :mod:`.stale`) and the state backend's API methods (``cleanup_old_workflows``,
``cleanup_stale_background_tasks`` in :mod:`exporter.state.workflows`).

Both sides select candidates the same way (an index range as a text pre-filter, then parsed instants
compared in Python, naive values read in the writer's zone) and change rows with the same guarded
statements: a row the application re-saved after it was read (new rowid, new ``created_at`` or
``updated_at``, no longer ``running``) is left alone.  The callers own the transactions and the loop:
the jobs add dry runs, the span-export gate, adaptive batch sizes and pauses; the backend runs the
pages back to back.  All functions take a plain :class:`sqlite3.Connection` in autocommit mode
(``isolation_level=None``); the ``*_rows`` ones expect the caller's ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from exporter.engines.flujo.jobs.config import STALE_TASK_ERROR
from exporter.jobs.db import Cursor, keyset_page, next_cursor, placeholders
from exporter.timeparse import TimestampError, parse_instant

__all__ = ["STALE_TASK_ERROR"]  # flujo 0.6.11's text for a background task it times out

# A run's own rows, children first: what flujo's delete_run removes with the run (runs last).
RUN_CHILD_TABLES = ("evaluations", "traces", "spans", "steps")

# (rowid, run_id, the stored timestamp re-checked by the guarded statement)
Candidate = tuple[int, str, object]
# Called for a stored value that is not a timestamp (NULL and empty included): (run_id, column, value).
OnBad = Callable[[object, str, object], None]

_STALE_SQL = (
    "SELECT rowid, run_id, updated_at FROM workflow_state"
    " WHERE status = 'running' AND COALESCE(is_background_task, 0) != 0"
)
_FAIL_SQL = (
    "UPDATE workflow_state SET status = 'failed', background_error = ?, updated_at = ?"
    " WHERE rowid = ? AND run_id = ? AND status = 'running' AND updated_at IS ?"
)


def stored_instant(value: object, tz: tzinfo) -> datetime | None:
    """The instant of a stored timestamp (naive = ``tz``); None for NULL, blank or not a timestamp."""
    if isinstance(value, str) and not value.strip():
        return None
    try:
        return parse_instant(value, tz)
    except TimestampError:
        return None


def _older(
    rows: Sequence[Sequence[object]], column: str, cutoff: datetime, tz: tzinfo, on_bad: OnBad
) -> list[Candidate]:
    """Rows ``(rowid, value, run_id)`` whose ``value`` instant is before ``cutoff``."""
    found: list[Candidate] = []
    for rowid, raw, run_id in rows:
        instant = stored_instant(raw, tz)
        if instant is None:
            on_bad(run_id, column, raw)
        elif instant < cutoff:
            found.append((int(rowid), str(run_id), raw))  # type: ignore[call-overload]
    return found


# -- cleanup of old workflows --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkflowPage:
    scanned: int  # rows read from the index (fewer than the limit: the last page)
    cursor: Cursor | None
    old: list[Candidate]


def old_workflows_page(
    conn: sqlite3.Connection,
    *,
    cutoff: datetime,
    bound: str,
    after: Cursor | None,
    limit: int,
    tz: tzinfo,
    on_bad: OnBad,
) -> WorkflowPage:
    """One page of ``workflow_state`` in ``created_at`` index order below the text ``bound`` (the
    pre-filter of ``cutoff``), and those of its rows created before ``cutoff``."""
    rows = keyset_page(
        conn,
        select="rowid, created_at, run_id",
        source="workflow_state",
        column="created_at",
        bound=bound,
        after=after,
        limit=limit,
    )
    return WorkflowPage(len(rows), next_cursor(rows), _older(rows, "created_at", cutoff, tz, on_bad))


def delete_workflow_rows(conn: sqlite3.Connection, rows: Sequence[Candidate]) -> list[str]:
    """Delete the rows still as read, set-based (a few statements while the write lock is held, not one
    per row); the run_ids deleted.  A row the application re-saved since has a new rowid (INSERT OR
    REPLACE) or a new created_at (now, never one of the old values read): it stays."""
    if not rows:
        return []
    marks = placeholders(len(rows))
    where = f"rowid IN ({marks}) AND created_at IN ({marks})"
    params = [rowid for rowid, _, _ in rows] + [raw for _, _, raw in rows]
    deleted = [str(row[0]) for row in conn.execute(f"SELECT run_id FROM workflow_state WHERE {where}", params)]
    if deleted:
        conn.execute(f"DELETE FROM workflow_state WHERE {where}", params)
    return deleted


# -- stale background tasks ----------------------------------------------------------------------------


def stale_tasks(
    conn: sqlite3.Connection, *, cutoff: datetime, tz: tzinfo, on_bad: OnBad, bound: str | None = None
) -> list[Candidate]:
    """Running background tasks whose ``updated_at`` instant is before ``cutoff`` (candidates come
    through the status index: running rows are few; ``bound`` narrows them by text first)."""
    sql, params = _STALE_SQL, []
    if bound is not None:
        sql += " AND updated_at < ?"
        params.append(bound)
    rows = [(rowid, raw, run_id) for rowid, run_id, raw in conn.execute(sql, params)]
    return _older(rows, "updated_at", cutoff, tz, on_bad)


def fail_stale_rows(conn: sqlite3.Connection, rows: Sequence[Candidate], error: str, now_iso: str) -> list[str]:
    """Set the tasks still as read to ``failed`` with ``error``; the run_ids changed."""
    return [
        run_id for rowid, run_id, raw in rows if conn.execute(_FAIL_SQL, (error, now_iso, rowid, run_id, raw)).rowcount
    ]
