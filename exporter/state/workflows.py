"""``workflow_state``: save/load, listings, statistics, windows, cleanup and background tasks."""

from __future__ import annotations

import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Any

from exporter.engines.flujo.jobs import core as flujo_writes
from exporter.engines.flujo.jobs.core import STALE_TASK_ERROR
from exporter.jobs.db import Cursor, write_transaction
from exporter.state.core import BackendCore, Row, execute, executemany, fetchall, fetchone, log, row_dict
from exporter.state.serialization import dumps, dumps_or_none, loads_or_raw
from exporter.state.validation import (
    limit_clause,
    non_negative_int,
    non_negative_number,
    optional_limit,
    optional_str,
    required_str,
    where_clause,
)
from exporter.state.windows import (
    caller_timestamp,
    instant_of,
    lower_text,
    upper_text,
)
from exporter.timeparse import TimestampError, instant_before, iso_utc, parse_instant

STATE_COLUMNS = (
    "run_id",
    "pipeline_id",
    "pipeline_name",
    "pipeline_version",
    "current_step_index",
    "pipeline_context",
    "last_step_output",
    "step_history",
    "status",
    "created_at",
    "updated_at",
    "total_steps",
    "error_message",
    "execution_time_ms",
    "memory_usage_mb",
    "metadata",
    "is_background_task",
    "parent_run_id",
    "task_id",
    "background_error",
)

_UPSERT_STATE = (
    f"INSERT INTO workflow_state ({', '.join(STATE_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in STATE_COLUMNS)}) "
    "ON CONFLICT(run_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in STATE_COLUMNS if c not in ("run_id", "created_at"))
    + ", created_at = CASE WHEN :created_given THEN excluded.created_at ELSE workflow_state.created_at END"
)

# The 12 keys of flujo's list_workflows/get_failed_workflows, plus the 0.6 background keys.
WORKFLOW_KEYS = (
    "run_id",
    "pipeline_id",
    "pipeline_name",
    "pipeline_version",
    "current_step_index",
    "status",
    "created_at",
    "updated_at",
    "total_steps",
    "error_message",
    "execution_time_ms",
    "memory_usage_mb",
    "is_background_task",
    "parent_run_id",
    "task_id",
)
_WORKFLOW_COLS = ", ".join(WORKFLOW_KEYS)

BACKGROUND_KEYS = (
    "run_id",
    "status",
    "created_at",
    "updated_at",
    "metadata",
    "parent_run_id",
    "task_id",
    "background_error",
)
_BACKGROUND_COLS = ", ".join(BACKGROUND_KEYS)

# Rows per write transaction of cleanup_old_workflows / cleanup_stale_background_tasks.
WRITE_BATCH = 500

# The hot statistics queries (get_workflow_stats and get_workflow_stats_sync).  Each one is answered
# from an index alone (tests check EXPLAIN QUERY PLAN): no scan of the workflow_state table.
STATS_COUNTS_SQL = "SELECT is_background_task, status, COUNT(*) FROM workflow_state GROUP BY is_background_task, status"
STATS_AVG_SQL = "SELECT AVG(execution_time_ms) FROM workflow_state WHERE execution_time_ms IS NOT NULL"
STATS_RECENT_SQL = "SELECT rowid, created_at FROM workflow_state WHERE created_at >= ?"
STATS_RUN_ID_SQL = "SELECT run_id FROM workflow_state WHERE rowid = ?"
STATS_QUERIES = (STATS_COUNTS_SQL, STATS_AVG_SQL, STATS_RECENT_SQL)

RECENT_WINDOW = timedelta(hours=24)


def state_params(run_id: object, state: object, now_iso: str) -> dict[str, Any]:
    """Named parameters of :data:`_UPSERT_STATE` for one state dict."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    rid = required_str("run_id", run_id)
    meta_raw = state.get("metadata")
    meta: Mapping[str, Any] = meta_raw if isinstance(meta_raw, Mapping) else {}

    def background(key: str) -> Any:
        value = state.get(key)
        return meta.get(key) if value is None else value

    created = caller_timestamp(state.get("created_at"), "created_at")
    updated = caller_timestamp(state.get("updated_at"), "updated_at")
    pipeline_id = state.get("pipeline_id") or "unknown"
    context = state.get("pipeline_context")
    return {
        "run_id": rid,
        "pipeline_id": pipeline_id,
        "pipeline_name": state.get("pipeline_name") or pipeline_id,
        "pipeline_version": state.get("pipeline_version") or "latest",
        "current_step_index": state.get("current_step_index") or 0,
        "pipeline_context": dumps({} if context is None else context),
        "last_step_output": dumps_or_none(state.get("last_step_output")),
        "step_history": dumps_or_none(state.get("step_history")),
        "status": state.get("status") or "running",
        "created_at": created or now_iso,
        "created_given": created is not None,
        "updated_at": updated or now_iso,
        "total_steps": state.get("total_steps") or 0,
        "error_message": state.get("error_message"),
        "execution_time_ms": state.get("execution_time_ms"),
        "memory_usage_mb": state.get("memory_usage_mb"),
        "metadata": dumps_or_none(meta_raw),
        "is_background_task": 1 if background("is_background_task") else 0,
        "parent_run_id": background("parent_run_id"),
        "task_id": background("task_id"),
        "background_error": background("background_error"),
    }


def _workflow(row: Row) -> dict[str, Any]:
    item = row_dict(row)
    item["is_background_task"] = bool(item.get("is_background_task"))
    return item


def _background(row: Row) -> dict[str, Any]:
    item = row_dict(row)
    metadata = loads_or_raw(item.get("metadata"))
    item["metadata"] = {} if metadata is None else metadata
    return item


def _window_filter(
    rows: Iterable[Row], column: str, threshold: datetime | None, tz: tzinfo, *, newer: bool
) -> list[tuple[datetime, Row]]:
    """Rows whose ``column`` instant is >= threshold (newer) or < threshold (older)."""
    kept: list[tuple[datetime, Row]] = []
    for row in rows:
        instant = instant_of(row[column], tz, table="workflow_state", column=column, run_id=row["run_id"])
        if instant is None:
            continue
        if threshold is None or (instant >= threshold if newer else instant < threshold):
            kept.append((instant, row))
    return kept


def _newest_first(pairs: list[tuple[datetime, Row]]) -> list[Row]:
    pairs.sort(key=lambda pair: (pair[0], str(pair[1]["run_id"])), reverse=True)
    return [row for _, row in pairs]


def assemble_stats(
    counts: Sequence[Sequence[Any]],
    avg: object,
    recent: Sequence[Sequence[Any]],
    threshold: datetime,
    tz: tzinfo,
) -> tuple[dict[str, Any], list[tuple[int, object]]]:
    """Build the stats dict from the three query results; also returns unparsable (rowid, value)."""
    status_counts: dict[str, int] = {}
    background: dict[str, int] = {}
    top_level: dict[str, int] = {}
    for flag, status, count in counts:
        key = str(status)
        status_counts[key] = status_counts.get(key, 0) + int(count)
        target = background if flag == 1 else top_level
        target[key] = target.get(key, 0) + int(count)
    recent_count = 0
    bad: list[tuple[int, object]] = []
    for rowid, value in recent:
        try:
            instant = parse_instant(value, tz)
        except TimestampError:
            instant = None
        if instant is None:
            bad.append((int(rowid), value))
        elif instant >= threshold:
            recent_count += 1
    stats = {
        "total_workflows": sum(status_counts.values()),
        "status_counts": status_counts,
        "recent_workflows_24h": recent_count,
        "average_execution_time_ms": 0 if avg is None else avg,
        "background_status_counts": background,
        "top_level_status_counts": top_level,
    }
    return stats, bad


def _warn_bad(run_id: object, column: str, value: object) -> None:
    log.warning("skipping workflow_state.%s of run_id=%r: not a timestamp (%r)", column, run_id, value)


def _warn_unparsable(column: str, items: Iterable[tuple[object, object]]) -> None:
    for run_id, value in items:
        log.warning("skipping workflow_state.%s of run_id=%r: not a timestamp (%r)", column, run_id, value)


class WorkflowStateMixin(BackendCore):
    """The ``workflow_state`` part of the API."""

    # -- save / load --------------------------------------------------------------------------------

    async def save_state(self, run_id: str, state: Mapping[str, Any]) -> None:
        """Upsert one workflow state (JSON-encoding contexts/outputs; naive datetimes are UTC).

        ``created_at`` is kept from the existing row when ``state`` has none.
        """
        params = state_params(run_id, state, self.now_iso())
        async with self.transaction("save_state") as (conn, _):
            await execute(conn, _UPSERT_STATE, params)

    async def save_states(self, states: Iterable[Mapping[str, Any]]) -> int:
        """Upsert many states (each with its ``run_id``) in one transaction; returns how many."""
        now_iso = self.now_iso()
        params = [
            state_params(state.get("run_id") if isinstance(state, Mapping) else None, state, now_iso)
            for state in states
        ]
        if not params:
            return 0
        async with self.transaction("save_states") as (conn, _):
            await executemany(conn, _UPSERT_STATE, params)
        return len(params)

    async def load_state(self, run_id: str) -> dict[str, Any] | None:
        """All columns of the row, JSON decoded; ``created_at``/``updated_at`` as aware UTC datetimes."""
        rid = required_str("run_id", run_id)
        async with self.session("load_state") as (conn, _):
            row = await fetchone(conn, "SELECT * FROM workflow_state WHERE run_id = ?", (rid,))
        if row is None:
            return None
        item = row_dict(row)
        for key in ("pipeline_context", "last_step_output", "step_history", "metadata"):
            item[key] = loads_or_raw(item.get(key))
        if item.get("pipeline_context") is None:
            item["pipeline_context"] = {}
        if item.get("step_history") is None:
            item["step_history"] = []
        if item.get("metadata") is None:
            item["metadata"] = {}
        item["is_background_task"] = bool(item.get("is_background_task"))
        for key in ("created_at", "updated_at"):
            instant = instant_of(item.get(key), self.naive_timezone, table="workflow_state", column=key, run_id=rid)
            if instant is not None:
                item[key] = instant
        return item

    async def delete_state(self, run_id: str) -> None:
        rid = required_str("run_id", run_id)
        async with self.transaction("delete_state") as (conn, _):
            await execute(conn, "DELETE FROM workflow_state WHERE run_id = ?", (rid,))

    # -- listings -----------------------------------------------------------------------------------

    async def list_states(self, status: str | None = None) -> list[dict[str, Any]]:
        """``[{run_id, status, created_at, updated_at}]`` (raw stored timestamps), newest first."""
        status = optional_str("status", status)
        where, params = where_clause({"status": status})
        sql = f"SELECT run_id, status, created_at, updated_at FROM workflow_state{where}"
        sql += " ORDER BY created_at DESC, run_id DESC"
        async with self.session("list_states") as (conn, _):
            return [row_dict(r) for r in await fetchall(conn, sql, params)]

    async def list_workflows(
        self,
        status: str | None = None,
        pipeline_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Workflows ordered by ``created_at DESC, run_id DESC`` (stable pages).

        ``pipeline_id=""`` means no filter; ``limit=None`` means all.
        """
        status = optional_str("status", status)
        pipeline_id = optional_str("pipeline_id", pipeline_id)
        lim = optional_limit(limit)
        off = non_negative_int("offset", offset)
        where, params = where_clause({"status": status, "pipeline_id": pipeline_id or None})
        sql = f"SELECT {_WORKFLOW_COLS} FROM workflow_state{where} ORDER BY created_at DESC, run_id DESC"
        clause, extra = limit_clause(lim, off)
        async with self.session("list_workflows") as (conn, _):
            rows = await fetchall(conn, sql + clause, params + extra)
        return [_workflow(r) for r in rows]

    # -- statistics ---------------------------------------------------------------------------------

    async def get_workflow_stats(self) -> dict[str, Any]:
        """``{total_workflows, status_counts, recent_workflows_24h, average_execution_time_ms,
        background_status_counts, top_level_status_counts}`` (all rows of workflow_state, like 0.6.11;
        the 24 h window compares real instants of ``created_at``)."""
        threshold = self.now() - RECENT_WINDOW
        async with self.session("get_workflow_stats") as (conn, _):
            await conn.execute("BEGIN")  # one snapshot for the three queries
            try:
                counts = await fetchall(conn, STATS_COUNTS_SQL)
                avg_row = await fetchone(conn, STATS_AVG_SQL)
                recent = await fetchall(conn, STATS_RECENT_SQL, (lower_text(threshold),))
                stats, bad = assemble_stats(
                    counts, avg_row[0] if avg_row else None, recent, threshold, self.naive_timezone
                )
                named = [
                    ((await fetchone(conn, STATS_RUN_ID_SQL, (rowid,)) or [rowid])[0], value) for rowid, value in bad
                ]
            finally:
                await conn.rollback()
        _warn_unparsable("created_at", named)
        return stats

    def get_workflow_stats_sync(self, *, timeout: float = 10.0) -> dict[str, Any]:
        """Same as :meth:`get_workflow_stats`, synchronously, on its own short-lived read-only
        ``sqlite3`` connection: safe from a Prometheus collector thread while an event loop runs.

        Raises :class:`StateBackendError` naming the file on any failure (flujo returns zeros), and
        aborts queries running longer than ``timeout`` seconds.
        """
        self.ensure_layout_sync()
        threshold = self.now() - RECENT_WINDOW
        uri = "file:" + urllib.parse.quote(str(self.db_path.resolve())) + "?mode=ro"
        deadline = time.monotonic() + timeout
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error("get_workflow_stats_sync", exc) from exc
        try:
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
            conn.execute("BEGIN")
            counts = conn.execute(STATS_COUNTS_SQL).fetchall()
            avg = conn.execute(STATS_AVG_SQL).fetchone()[0]
            recent = conn.execute(STATS_RECENT_SQL, (lower_text(threshold),)).fetchall()
            stats, bad = assemble_stats(counts, avg, recent, threshold, self.naive_timezone)
            named = []
            for rowid, value in bad:
                found = conn.execute(STATS_RUN_ID_SQL, (rowid,)).fetchone()
                named.append((found[0] if found else rowid, value))
        except sqlite3.Error as exc:
            raise self._error("get_workflow_stats_sync", exc) from exc
        finally:
            conn.close()
        _warn_unparsable("created_at", named)
        return stats

    # -- time windows -------------------------------------------------------------------------------

    async def get_failed_workflows(self, hours_back: float = 24) -> list[dict[str, Any]]:
        """Failed workflows whose ``updated_at`` is within the last ``hours_back`` hours (real
        instants), newest first; the 12 keys of flujo (+ background keys), raw timestamps."""
        hours = non_negative_number("hours_back", hours_back)
        threshold = instant_before(self.now(), hours * 3600)
        sql = f"SELECT {_WORKFLOW_COLS} FROM workflow_state WHERE status = 'failed' AND updated_at >= ?"
        async with self.session("get_failed_workflows") as (conn, _):
            rows = await fetchall(conn, sql, (lower_text(threshold),))
        kept = _window_filter(rows, "updated_at", threshold, self.naive_timezone, newer=True)
        return [_workflow(r) for r in _newest_first(kept)]

    async def cleanup_old_workflows(self, days_old: float = 30) -> int:
        """Delete workflow_state rows created more than ``days_old`` days ago (real instants);
        returns how many were deleted.  runs/steps/spans are not touched (like flujo).

        The daemon's cleanup job and this method share one core (``engines/flujo/jobs/core.py``):
        keyset pages over the created_at index, one short write transaction per page, a row re-saved
        meanwhile is kept.  Unlike the job, pages follow each other without pause or span-export gate."""
        days = non_negative_number("days_old", days_old)
        threshold = instant_before(self.now(), days * 86400)
        bound = upper_text(threshold)

        def work(conn: sqlite3.Connection) -> int:
            if threshold is None or bound is None:
                return 0
            deleted = 0
            cursor: Cursor | None = None
            while True:
                page = flujo_writes.old_workflows_page(
                    conn,
                    cutoff=threshold,
                    bound=bound,
                    after=cursor,
                    limit=WRITE_BATCH,
                    tz=self.naive_timezone,
                    on_bad=_warn_bad,
                )
                cursor = page.cursor
                if page.old:
                    with write_transaction(conn):
                        deleted += len(flujo_writes.delete_workflow_rows(conn, page.old))
                if page.scanned < WRITE_BATCH:
                    return deleted

        return await self.run_plain("cleanup_old_workflows", work)

    # -- background tasks (0.6) ---------------------------------------------------------------------

    async def list_background_tasks(
        self,
        parent_run_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Background-task rows ``{run_id, status, created_at, updated_at, metadata, parent_run_id,
        task_id, background_error}``, newest first."""
        parent = optional_str("parent_run_id", parent_run_id)
        status = optional_str("status", status)
        lim = optional_limit(limit)
        off = non_negative_int("offset", offset)
        where, params = where_clause({"parent_run_id": parent, "status": status}, fixed=["is_background_task = 1"])
        sql = f"SELECT {_BACKGROUND_COLS} FROM workflow_state{where} ORDER BY created_at DESC, run_id DESC"
        clause, extra = limit_clause(lim, off)
        async with self.session("list_background_tasks") as (conn, _):
            rows = await fetchall(conn, sql + clause, params + extra)
        return [_background(r) for r in rows]

    async def get_failed_background_tasks(
        self, parent_run_id: str | None = None, hours_back: float = 24
    ) -> list[dict[str, Any]]:
        """Failed background tasks updated within the last ``hours_back`` hours, newest first."""
        parent = optional_str("parent_run_id", parent_run_id)
        hours = non_negative_number("hours_back", hours_back)
        threshold = instant_before(self.now(), hours * 3600)
        where, params = where_clause(
            {"parent_run_id": parent},
            fixed=["is_background_task = 1", "status = 'failed'", "updated_at >= ?"],
            params=[lower_text(threshold)],
        )
        sql = f"SELECT {_BACKGROUND_COLS} FROM workflow_state{where}"
        async with self.session("get_failed_background_tasks") as (conn, _):
            rows = await fetchall(conn, sql, params)
        kept = _window_filter(rows, "updated_at", threshold, self.naive_timezone, newer=True)
        return [_background(r) for r in _newest_first(kept)]

    async def cleanup_stale_background_tasks(self, stale_hours: float = 24) -> int:
        """Mark running background tasks not updated for ``stale_hours`` hours as failed
        (``background_error='Task timeout: process likely crashed'``); returns how many.

        Same core as the daemon's stale-task job (``engines/flujo/jobs/core.py``): candidates through
        the status index, a guarded UPDATE by rowid and the updated_at read, short transactions."""
        hours = non_negative_number("stale_hours", stale_hours)
        now = self.now()
        threshold = instant_before(now, hours * 3600)
        bound = upper_text(threshold)

        def work(conn: sqlite3.Connection) -> int:
            if threshold is None or bound is None:
                return 0
            stale = flujo_writes.stale_tasks(
                conn, cutoff=threshold, tz=self.naive_timezone, on_bad=_warn_bad, bound=bound
            )
            changed = 0
            for start in range(0, len(stale), WRITE_BATCH):
                with write_transaction(conn):
                    batch = stale[start : start + WRITE_BATCH]
                    changed += len(flujo_writes.fail_stale_rows(conn, batch, STALE_TASK_ERROR, iso_utc(now)))
            return changed

        return await self.run_plain("cleanup_stale_background_tasks", work)
