"""Queries on ``runs`` and ``steps`` (absent in the 0.4.32 legacy layout).

Whole-history breakdowns scan the table and belong to the aggregate tier.  Finished runs and
steps are instead followed incrementally by ``rowid``: a row keeps its rowid when flujo UPDATEs
it at the end of a run, so "rows after the last rowid seen" plus "rows seen unfinished before" is an
index-bound way to observe every finish exactly once, whatever cleanup deletes later.  Postgres has
no rowid: there a run is keyed by its ``run_id`` and new runs are found through the created_at index
(see :mod:`exporter.engines.flujo.tracking`), steps by their ``SERIAL`` id.

When a run has finished is decided from both tables (:func:`final_status`), because ``runs.status``
alone lies: at a human-in-the-loop pause flujo writes ``runs.status='completed'`` with an end time
while ``workflow_state.status='paused'``, and a cancelled run is ``completed`` in ``runs`` but
``cancelled`` in ``workflow_state``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from exporter.engines.flujo.dialect import RowKey
from exporter.engines.flujo.groups import grouped_counts
from exporter.engines.flujo.layout import Schema
from exporter.engines.flujo.statuses import ACTIVE_SQL, ACTIVE_STATUSES, FINISHED_SQL, FINISHED_STATUSES
from exporter.engines.flujo.workflows import UNKNOWN_PIPELINE
from exporter.labels import label_text
from exporter.reader.badvalues import BadValue, shown
from exporter.reader.sql import Connection, in_chunks
from exporter.timeparse import TimestampError, parse_instant


@dataclass(frozen=True)
class RunRow:
    """One ``runs`` row with its ``workflow_state`` status.  ``pipeline``/``status`` are None when the
    stored value cannot be a label (the row is then skipped and reported through ``bad``)."""

    key: RowKey  # rowid on SQLite, run_id on Postgres (see Dialect.key)
    run_id: str  # for matching and logs only
    pipeline: str | None
    status: str | None
    workflow_status: str | None  # workflow_state.status when it is a known status, else None
    end_raw: object  # the stored end, to notice that flujo rewrote the row
    ended_at: datetime | None  # None while running or when the time is missing/unparseable
    duration_s: float | None
    bad: tuple[BadValue, ...]

    @property
    def valid(self) -> bool:
        return self.pipeline is not None and self.status is not None

    @property
    def fingerprint(self) -> tuple[object, object]:
        return (self.status, self.end_raw)

    @property
    def final_status(self) -> str | None:
        """The run's final status, or None while it may still change (see :func:`final_status`)."""
        return None if self.status is None else final_status(self.status, self.workflow_status)


@dataclass(frozen=True)
class StepRow:
    key: int  # rowid on SQLite, the SERIAL id on Postgres
    step_name: str | None
    status: str | None
    ended_at: datetime | None  # when the row was recorded, right after the step
    duration_s: float | None
    bad: tuple[BadValue, ...]

    @property
    def valid(self) -> bool:
        return self.step_name is not None and self.status is not None


@dataclass(frozen=True)
class GroupCount:
    """A seed GROUP BY row: ``n`` rows share these values (None when a value cannot be a label)."""

    label: str | None  # pipeline or step name
    status: str | None  # the final status
    n: int
    bad: tuple[BadValue, ...]

    @property
    def valid(self) -> bool:
        return self.label is not None and self.status is not None


@dataclass(frozen=True)
class PendingRun:
    key: RowKey
    run_id: str
    fingerprint: tuple[object, object] | None  # set when runs says final but workflow_state does not


def final_status(run_status: str, workflow_status: str | None) -> str | None:
    """The status a run ended with, or None while it has not ended.

    * ``runs`` running (or paused): not ended.
    * ``runs`` completed while ``workflow_state`` is running/paused: a pause for approval (flujo writes
      ``completed`` at the pause) or a resumed run still going: not ended.
    * ``runs`` failed (or anything else) while ``workflow_state`` is running/paused: ended.  flujo
      writes ``failed`` only at a real end, and 0.6.x leaves ``workflow_state`` paused after a resumed
      run fails.
    * ``workflow_state`` final: its status, the engine's own final word (0.6.x ``list_runs`` reports
      it too): a cancelled run is ``cancelled`` there but ``completed`` in ``runs``.
    * no ``workflow_state`` row (``delete_on_completion``, cleanup, direct writes): ``runs``' status.
    """
    if run_status in ACTIVE_STATUSES:
        return None
    if workflow_status in ACTIVE_STATUSES:
        return None if run_status == "completed" else run_status
    if workflow_status in FINISHED_STATUSES:
        return workflow_status
    return run_status


def pipeline_status_counts(conn: Connection, bad: list[BadValue]) -> Counter[tuple[str, str]]:
    """Runs per (pipeline_name, status), an empty name read as 'unknown'.  Scans the table: aggregate
    tier only."""
    counts: Counter[tuple[str, str]] = Counter()
    for (pipeline, status), n in grouped_counts(conn, "runs", ("pipeline_name", "status"), bad).items():
        counts[(pipeline or UNKNOWN_PIPELINE, status)] += n
    return counts


def max_rowid(conn: Connection, table: str) -> int:
    """SQLite only (a Postgres table has no rowid)."""
    if table not in ("runs", "steps", "workflow_state"):
        raise ValueError(table)
    return int(conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {table}").fetchone()[0])


def max_step_id(conn: Connection) -> int:
    """Postgres: the highest SERIAL id of steps (0 when empty)."""
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM steps").fetchone()[0])


def workflow_saves_after(conn: Connection, rowid: int) -> tuple[int, set[str]]:
    """(new max rowid, run_ids) of the workflow_state rows saved after ``rowid``.  flujo saves state with
    ``INSERT OR REPLACE``, which gives the row a new, higher rowid every time: a paused run that is
    resumed, ended or cancelled shows up here, by the rowid order alone."""
    top, found = rowid, set()
    for row_rowid, run_id in conn.execute("SELECT rowid, run_id FROM workflow_state WHERE rowid > ?", (rowid,)):
        top = max(top, int(row_rowid))
        found.add(_run_id(run_id))
    return top, found


def runs_after(conn: Connection, schema: Schema, rowid: int, limit: int) -> list[RunRow]:
    sql = f"{_run_select(schema)} WHERE r.rowid > ? ORDER BY r.rowid LIMIT ?"
    return [_run_row(schema, row) for row in conn.execute(sql, (rowid, limit))]


def runs_created_since(conn: Connection, since: datetime | None) -> list[tuple[str, datetime]]:
    """Postgres: (run_id, created_at) of the runs created at ``since`` or later (its created_at
    index); every run when ``since`` is None."""
    where, params = (" WHERE created_at >= ?", (since,)) if since is not None else ("", ())
    return [
        (_run_id(run_id), created)
        for run_id, created in conn.execute(f"SELECT run_id, created_at FROM runs{where}", params)
        if isinstance(created, datetime)
    ]


def newest_run_created(conn: Connection) -> datetime | None:
    """Postgres: the newest ``runs.created_at`` (the end of its created_at index)."""
    value = conn.execute("SELECT MAX(created_at) FROM runs").fetchone()[0]
    return value if isinstance(value, datetime) else None


def runs_by_key(conn: Connection, schema: Schema, keys: Sequence[RowKey]) -> list[RunRow]:
    found: list[RunRow] = []
    for marks, chunk in in_chunks(keys):
        sql = f"{_run_select(schema)} WHERE {schema.dialect.key('runs', 'r')} IN ({marks})"
        found.extend(_run_row(schema, row) for row in conn.execute(sql, chunk))
    return found


@dataclass(frozen=True)
class RunState:
    """What decides whether a run has ended, as stored (compared between refreshes, never parsed)."""

    run_id: object
    status: object
    end: object
    workflow_status: object


def run_states(conn: Connection, schema: Schema, keys: Sequence[RowKey]) -> dict[RowKey, RunState]:
    """The deciding columns of these runs (key probes plus a workflow_state primary-key probe each):
    the cheap per-refresh check of runs still pending; only the rows that changed are read in full."""
    found: dict[RowKey, RunState] = {}
    key = schema.dialect.key("runs", "r")
    for marks, chunk in in_chunks(keys):
        sql = (
            f"SELECT {key}, r.run_id, r.status, {schema.run_end_expr},"
            f" (SELECT w.status FROM workflow_state w WHERE w.run_id = r.run_id) FROM runs r WHERE {key} IN ({marks})"
        )
        for row_key, run_id, status, end, workflow_status in conn.execute(sql, chunk):
            found[_key(row_key)] = RunState(run_id, status, end, workflow_status)
    return found


def finished_counts(conn: Connection, schema: Schema, up_to_rowid: int | None) -> list[GroupCount]:
    """Ended runs (by :func:`final_status`) per (pipeline, final status), biggest first so that label
    caps keep the busiest.  One scan of ``runs`` with a primary-key probe of ``workflow_state`` per row:
    the seed pass only.  ``up_to_rowid`` None: every run (Postgres, where the seed's own transaction
    is the bound)."""
    dialect = schema.dialect
    bound, params = ("r.rowid <= ? AND ", (up_to_rowid,)) if up_to_rowid is not None else ("", ())
    ended = dialect.is_true(f"r.status IN {ACTIVE_SQL} OR (r.status = 'completed' AND w.status IN {ACTIVE_SQL})")
    sql = (
        f"SELECT r.pipeline_name, r.status, CASE WHEN w.status IN {FINISHED_SQL} THEN w.status END,"
        " COUNT(*), MIN(r.run_id)"
        f" FROM runs r{dialect.not_indexed} LEFT JOIN workflow_state w ON w.run_id = r.run_id"
        f" WHERE {bound}NOT ({ended})"
        " GROUP BY 1, 2, 3 ORDER BY 4 DESC"
    )
    found = []
    for pipeline_raw, status_raw, workflow_status, n, sample in conn.execute(sql, params):
        pipeline, status = label_text(pipeline_raw), label_text(status_raw)
        bad = _group_bad(
            "runs", sample, int(n), ("pipeline_name", pipeline_raw, pipeline), ("status", status_raw, status)
        )
        final = None if status is None else final_status(status, workflow_status)
        found.append(GroupCount(pipeline, final, int(n), bad))
    return found


def still_held(conn: Connection, run_ids: Sequence[str]) -> set[str]:
    """Postgres only: of these runs, those still held back, ``workflow_state`` running/paused (its
    status index, all at once) and ``runs`` still ``completed`` (one primary-key probe of an array)."""
    active = {str(r) for (r,) in conn.execute(f"SELECT run_id FROM workflow_state WHERE status IN {ACTIVE_SQL}")}
    candidates = [run_id for run_id in run_ids if run_id in active]
    if not candidates:
        return set()
    rows = conn.execute("SELECT run_id FROM runs WHERE status = 'completed' AND run_id = ANY(?)", (candidates,))
    return {str(r) for (r,) in rows}


def active_keys(conn: Connection, schema: Schema) -> set[RowKey]:
    """Keys of runs whose ``runs.status`` is running/paused: from the status index alone."""
    key = schema.dialect.key("runs")
    return {_key(r) for (r,) in conn.execute(f"SELECT {key} FROM runs WHERE status IN {ACTIVE_SQL}")}


def pending_runs(conn: Connection, schema: Schema, up_to_rowid: int | None) -> list[PendingRun]:
    """Runs not ended at ``up_to_rowid`` (None: all, on Postgres): running in ``runs`` (status index),
    or final in ``runs`` but running/paused in ``workflow_state`` (its status index, then a ``runs``
    primary-key probe)."""
    dialect = schema.dialect
    key = dialect.key("runs", "r")
    bound, params = (f" AND {key} <= ?", (up_to_rowid,)) if up_to_rowid is not None else ("", ())
    active = conn.execute(f"SELECT {key}, r.run_id FROM runs r WHERE r.status IN {ACTIVE_SQL}{bound}", params)
    found = [PendingRun(_key(r), _run_id(i), None) for r, i in active]
    held_sql = (
        # CROSS JOIN keeps workflow_state's status index as the outer loop (else SQLite may walk every
        # completed run through the runs status index)
        f"SELECT {key} FROM workflow_state w {dialect.outer_first_join} runs r ON r.run_id = w.run_id"
        f" WHERE w.status IN {ACTIVE_SQL} AND r.status = 'completed'{bound}"
    )
    held = [_key(r) for (r,) in conn.execute(held_sql, params)]
    for row in runs_by_key(conn, schema, held):
        if row.valid and row.final_status is None:
            found.append(PendingRun(row.key, row.run_id, row.fingerprint))
    return found


def runs_started_since(conn: Connection, schema: Schema, since: datetime, up_to_rowid: int | None) -> list[RunRow]:
    """Runs started within a day before ``since`` or later (bounded by the start-time index)."""
    bound = schema.dialect.lower_bound(since - timedelta(days=1))
    upto, params = (" AND r.rowid <= ?", (bound, up_to_rowid)) if up_to_rowid is not None else ("", (bound,))
    sql = f"{_run_select(schema)} WHERE {schema.run_start_expr} >= ?{upto}"
    return [_run_row(schema, row) for row in conn.execute(sql, params)]


def step_counts(conn: Connection, schema: Schema, up_to_key: int) -> list[GroupCount]:
    key = schema.dialect.key("steps")
    sql = f"SELECT step_name, status, COUNT(*) FROM steps WHERE {key} <= ? GROUP BY 1, 2 ORDER BY 3 DESC"
    found = []
    for name_raw, status_raw, n in conn.execute(sql, (up_to_key,)):
        name, status = label_text(name_raw), label_text(status_raw)
        bad = _group_bad("steps", "", int(n), ("step_name", name_raw, name), ("status", status_raw, status))
        found.append(GroupCount(name, status, int(n), bad))
    return found


def recent_steps(conn: Connection, schema: Schema, up_to_rowid: int, since: datetime) -> list[StepRow]:
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
            cursor = step.key
            if step.ended_at is not None and step.ended_at < since:
                older_in_a_row += 1
                continue
            older_in_a_row = 0
            found.append(step)
    return found


_OLDER_ROWS_TO_STOP = 500


def _steps_before(conn: Connection, schema: Schema, rowid: int, limit: int) -> list[StepRow]:
    key = schema.dialect.key("steps")
    return _step_rows(conn, schema, f"WHERE {key} < ? ORDER BY {key} DESC LIMIT ?", (rowid, limit))


def steps_after(conn: Connection, schema: Schema, rowid: int, limit: int) -> list[StepRow]:
    key = schema.dialect.key("steps")
    return _step_rows(conn, schema, f"WHERE {key} > ? ORDER BY {key} LIMIT ?", (rowid, limit))


def steps_by_id(conn: Connection, schema: Schema, ids: Sequence[int]) -> list[StepRow]:
    """Postgres: the steps with these SERIAL ids that exist (now)."""
    found: list[StepRow] = []
    for marks, chunk in in_chunks(ids):
        found.extend(_step_rows(conn, schema, f"WHERE id IN ({marks})", chunk))
    return found


def step_ids_between(conn: Connection, low: int, high: int) -> list[int]:
    """Postgres: the step ids in (low, high] (its primary key alone)."""
    return [int(i) for (i,) in conn.execute("SELECT id FROM steps WHERE id > ? AND id <= ?", (low, high))]


def _step_rows(conn: Connection, schema: Schema, where: str, params: Sequence[object]) -> list[StepRow]:
    time_column, ms_column = schema.step_time_expr, schema.step_duration_ms_expr
    key = schema.dialect.key("steps")
    sql = f"SELECT {key}, run_id, step_name, status, {time_column}, {ms_column} FROM steps {where}"
    found = []
    for rowid, run_id_raw, name_raw, status_raw, recorded_raw, ms in conn.execute(sql, params):
        run_id = _run_id(run_id_raw)
        bad: list[BadValue] = []
        name, status = label_text(name_raw), label_text(status_raw)
        if name is None:
            bad.append(BadValue("steps", "step_name", run_id, shown(name_raw)))
        if status is None:
            bad.append(BadValue("steps", "status", run_id, shown(status_raw)))
        recorded = _instant(recorded_raw, "steps", time_column, run_id, bad)
        duration = None
        if isinstance(ms, int | float) and not isinstance(ms, bool) and ms == ms and abs(ms) < 1e15:
            duration = max(float(ms), 0.0) / 1000.0
        elif ms is not None:
            bad.append(BadValue("steps", ms_column, run_id, shown(ms)))
        found.append(StepRow(int(rowid), name, status, recorded, duration, tuple(bad)))
    return found


def _run_select(schema: Schema) -> str:
    return (
        f"SELECT {schema.dialect.key('runs', 'r')}, r.run_id, r.pipeline_name, r.status, {schema.run_start_expr},"
        f" {schema.run_end_expr},"
        " (SELECT w.status FROM workflow_state w WHERE w.run_id = r.run_id) FROM runs r"
    )


def _run_row(schema: Schema, row: Sequence[object]) -> RunRow:
    row_key, run_id_raw, pipeline_raw, status_raw, start_raw, end_raw, workflow_raw = row
    run_id = _run_id(run_id_raw)
    bad: list[BadValue] = []
    pipeline, status = label_text(pipeline_raw), label_text(status_raw)
    if pipeline is None:
        bad.append(BadValue("runs", "pipeline_name", run_id, shown(pipeline_raw)))
    if status is None:
        bad.append(BadValue("runs", "status", run_id, shown(status_raw)))
    start_column = schema.run_start_columns[0]
    end_column = (
        "end_time" if schema.has("runs", "start_time") or not schema.has("runs", "updated_at") else "updated_at"
    )
    start = _instant(start_raw, "runs", start_column, run_id, bad)
    end = _instant(end_raw, "runs", end_column, run_id, bad)
    duration = max((end - start).total_seconds(), 0.0) if start and end else None
    workflow_status = workflow_raw if workflow_raw in (*ACTIVE_STATUSES, *FINISHED_STATUSES) else None
    return RunRow(
        _key(row_key),
        run_id,
        pipeline,
        status,
        workflow_status,
        end_raw,
        end,
        duration,
        tuple(bad),
    )


def _key(raw: object) -> RowKey:
    """A row key as read: SQLite's rowid, or Postgres' run_id text."""
    if isinstance(raw, int | str):
        return raw
    raise TypeError(f"row key of unexpected type {type(raw).__name__}")


def _run_id(raw: object) -> str:
    return raw if isinstance(raw, str) else shown(raw)


def _group_bad(table: str, sample: object, n: int, *columns: tuple[str, object, str | None]) -> tuple[BadValue, ...]:
    """One report per row of a seed group whose value cannot be a label (``sample`` names one run)."""
    found = []
    for column, raw, text in columns:
        if text is None:
            found.extend([BadValue(table, column, _run_id(sample) if sample else f"{n} rows", shown(raw))] * n)
    return tuple(found)


def _instant(raw: object, table: str, column: str, run_id: str, bad: list[BadValue]) -> datetime | None:
    """runs/steps times are UTC (naive in 0.4.x, '+00:00' in 0.6.x); unparseable reads as unknown and
    is reported."""
    try:
        return parse_instant(raw, UTC)
    except (TimestampError, OverflowError):  # OverflowError: years out of range once shifted to UTC
        bad.append(BadValue(table, column, run_id, shown(raw)))
        return None
