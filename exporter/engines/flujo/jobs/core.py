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

On Postgres (``dialect=POSTGRES``, a :class:`exporter.jobs.pg.PostgresJobConnection` in autocommit
mode and the caller's ``BEGIN``) the same functions page by primary key (run_id) instead of rowid,
compare real instants in the index range, and recognise a re-saved row by its ``updated_at`` (flujo's
upsert there keeps ``created_at``); the rows about to change are locked ``FOR UPDATE SKIP LOCKED``,
so a row the application is writing at that moment is left for the next run, never waited for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from exporter.engines.flujo.dialect import SQLITE, Dialect, RowKey
from exporter.engines.flujo.jobs.config import STALE_TASK_ERROR
from exporter.jobs.db import Cursor, JobConn, keyset_page, next_cursor, placeholders
from exporter.timeparse import TimestampError, parse_instant

__all__ = ["STALE_TASK_ERROR"]  # flujo 0.6.11's text for a background task it times out

# A run's own rows, children first: what flujo's delete_run removes with the run (runs last).
RUN_CHILD_TABLES = ("evaluations", "traces", "spans", "steps")

# (rowid or Postgres key, run_id, the stored timestamp re-checked by the guarded statement)
Candidate = tuple[RowKey, str, object]
# Called for a stored value that is not a timestamp (NULL and empty included): (run_id, column, value).
OnBad = Callable[[object, str, object], None]


def _stale_sql(dialect: Dialect) -> str:
    return (
        f"SELECT {dialect.key('workflow_state')}, run_id, updated_at FROM workflow_state"
        f" WHERE status = 'running' AND {dialect.is_true('is_background_task')}"
    )


def _fail_sql(dialect: Dialect) -> str:
    return (
        "UPDATE workflow_state SET status = 'failed', background_error = ?, updated_at = ?"
        f" WHERE {dialect.key('workflow_state')} = ? AND run_id = ? AND status = 'running'"
        f" AND {dialect.same_as('updated_at')}"
    )


def stored_instant(value: object, tz: tzinfo) -> datetime | None:
    """The instant of a stored timestamp (naive = ``tz``); None for NULL, blank or not a timestamp."""
    if isinstance(value, str) and not value.strip():
        return None
    try:
        return parse_instant(value, tz)
    except TimestampError:
        return None


def row_key(value: object) -> RowKey:
    """A rowid (int) or a Postgres key as read (run_id text)."""
    return value if isinstance(value, str) else int(value)  # type: ignore[call-overload]


def _older(
    rows: Sequence[Sequence[object]], column: str, cutoff: datetime, tz: tzinfo, on_bad: OnBad
) -> list[Candidate]:
    """Rows ``(key, value, run_id[, guard])`` whose ``value`` instant is before ``cutoff``; the
    candidate keeps ``guard`` (default: ``value``) for the guarded statement."""
    found: list[Candidate] = []
    for key, raw, run_id, *guard in rows:
        instant = stored_instant(raw, tz)
        if instant is None:
            on_bad(run_id, column, raw)
        elif instant < cutoff:
            found.append((row_key(key), str(run_id), guard[0] if guard else raw))
    return found


# -- cleanup of old workflows --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkflowPage:
    scanned: int  # rows read from the index (fewer than the limit: the last page)
    cursor: Cursor | None
    old: list[Candidate]


def old_workflows_page(
    conn: JobConn,
    *,
    cutoff: datetime,
    bound: object,
    after: Cursor | None,
    limit: int,
    tz: tzinfo,
    on_bad: OnBad,
    dialect: Dialect = SQLITE,
) -> WorkflowPage:
    """One page of ``workflow_state`` in ``created_at`` index order below ``bound`` (the pre-filter of
    ``cutoff``: text on SQLite, the instant on Postgres), and those of its rows created before
    ``cutoff``, each with the value its delete re-checks (:attr:`Dialect.resave_column`)."""
    key = dialect.key("workflow_state")
    guard = "" if dialect.resave_column == "created_at" else f", {dialect.resave_column}"
    rows = keyset_page(
        conn,
        select=f"{key}, created_at, run_id{guard}",
        source="workflow_state",
        column="created_at",
        rowid=key,
        bound=bound,
        after=after,
        limit=limit,
    )
    return WorkflowPage(len(rows), next_cursor(rows), _older(rows, "created_at", cutoff, tz, on_bad))


def delete_workflow_rows(conn: JobConn, rows: Sequence[Candidate], dialect: Dialect = SQLITE) -> list[str]:
    """Delete the rows still as read, set-based (a few statements while the write lock is held, not one
    per row); the run_ids deleted.  A row the application re-saved since has a new rowid (INSERT OR
    REPLACE) or a new created_at (now, never one of the old values read): it stays.  On Postgres a
    re-saved row has a new updated_at; the rows found are locked first (rows the application holds
    are skipped), then deleted by key, so nothing can change them in between."""
    if not rows:
        return []
    key = dialect.key("workflow_state")
    where, params = dialect.still_as_read(key, dialect.resave_column, [(k, raw) for k, _, raw in rows])
    found = [
        (row[0], str(row[1]))
        for row in conn.execute(f"SELECT {key}, run_id FROM workflow_state WHERE {where}{dialect.skip_locked}", params)
    ]
    if found and dialect.skip_locked:
        conn.execute(f"DELETE FROM workflow_state WHERE {key} IN ({placeholders(len(found))})", [k for k, _ in found])
    elif found:
        conn.execute(f"DELETE FROM workflow_state WHERE {where}", params)
    return [run_id for _, run_id in found]


# -- stale background tasks ----------------------------------------------------------------------------


def stale_tasks(
    conn: JobConn,
    *,
    cutoff: datetime,
    tz: tzinfo,
    on_bad: OnBad,
    bound: object | None = None,
    dialect: Dialect = SQLITE,
) -> list[Candidate]:
    """Running background tasks whose ``updated_at`` instant is before ``cutoff`` (candidates come
    through the status index: running rows are few; ``bound`` narrows them by text, or on Postgres
    by instant, first)."""
    sql, params = _stale_sql(dialect), []
    if bound is not None:
        sql += " AND updated_at < ?"
        params.append(bound)
    rows = [(rowid, raw, run_id) for rowid, run_id, raw in conn.execute(sql, params)]
    return _older(rows, "updated_at", cutoff, tz, on_bad)


def fail_stale_rows(
    conn: JobConn, rows: Sequence[Candidate], error: str, now: object, dialect: Dialect = SQLITE
) -> list[str]:
    """Set the tasks still as read to ``failed`` with ``error`` and ``updated_at`` = ``now`` (a value
    of :meth:`Dialect.timestamp`); the run_ids changed.  On Postgres the guarded ``UPDATE`` re-reads
    a row another transaction changed meanwhile (READ COMMITTED re-evaluates the ``WHERE`` on the
    newest version), so a task re-saved since it was read is left alone there too."""
    sql = _fail_sql(dialect)
    return [run_id for key, run_id, raw in rows if conn.execute(sql, (error, now, key, run_id, raw)).rowcount]
