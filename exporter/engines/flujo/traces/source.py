"""Reading runs and their spans from the Flujo DB (0.4.35, 0.6.x and the hybrid layout).

Runs are discovered by ``runs.rowid``: flujo UPDATEs a run row in place at its end, so its rowid is
stable, while every span save deletes and re-inserts all the run's span rows (new rowids, 0.6's
integer ``id`` too).  Spans are therefore identified by their stored ``span_id`` text, never by rowid.

A run is *finished* when its ``workflow_state`` row says completed/failed/cancelled, or, without such
a row, when ``runs.status`` does.  ``paused`` (HITL) and ``running`` are in progress even where the
runs table already says ``completed`` (0.4.35 writes that for a paused run).

On Postgres (no rowid) a run's position is its ``created_at`` in microseconds and discovery follows
``created_at`` (:mod:`exporter.engines.flujo.traces.pgcursor`); oversized values are cut on the server.

Memory: span rows are read with SQLite's length limit set to :data:`MAX_VALUE_BYTES`, so a huge value
is never materialised, not even inside SQLite (it refuses the row before loading it).  A page with
such a row is read again row by row, each text through SQLite's incremental blob I/O: of an oversized
value only the first :data:`TRUNCATED_PREFIX_BYTES` are read (attributes: kept as
``flujo.attributes.raw`` with ``flujo.attributes.truncated_bytes``, the stored size; any other column:
that prefix).  Logged for each such row.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any, TypeGuard

from exporter.engines.flujo.layout import Capability, Schema
from exporter.engines.flujo.spantime import EPOCH_CLOCK, SpanClock, clock_for_run, is_monotonic
from exporter.engines.flujo.statuses import ACTIVE_SQL, FINISHED_SQL, FINISHED_STATUSES
from exporter.reader.sql import Connection, in_chunks
from exporter.timeparse import TimestampError, parse_instant, to_epoch

log = logging.getLogger("exporter.traces")

FINISHED = frozenset(FINISHED_STATUSES)
MAX_VALUE_BYTES = 1 << 20  # one stored value (attributes, name...) read as is up to this size
TRUNCATED_PREFIX_BYTES = 16 * 1024  # what is kept of a larger attributes value
RAW_KEY = "flujo.attributes.raw"
TRUNCATED_KEY = "flujo.attributes.truncated_bytes"

# (run_id, span_id, parent_span_id, name, start_time, end_time, status, attributes)
SpanRow = tuple[str, str, str | None, object, object, object, object, object]
_SPAN_COLUMNS = "run_id, span_id, parent_span_id, name, start_time, end_time, status, attributes"
# Postgres: the same columns with every value bounded on the server, so a huge one never reaches this
# process (SQLite's length limit and blob I/O do that for a file): JSONB attributes as text (what
# the encoder parses), an oversized one replaced by its prefix and stored size, as on SQLite.
_PG_ATTRIBUTES = (
    f"CASE WHEN octet_length(attributes::text) <= {MAX_VALUE_BYTES} THEN attributes::text"
    f" ELSE json_build_object('{RAW_KEY}', left(attributes::text, {TRUNCATED_PREFIX_BYTES}),"
    f" '{TRUNCATED_KEY}', octet_length(attributes::text))::text END"
)
_PG_SPAN_COLUMNS = (
    f"run_id, span_id, parent_span_id, left(name, {MAX_VALUE_BYTES}), start_time, end_time,"
    f" left(status, {MAX_VALUE_BYTES}), {_PG_ATTRIBUTES}"
)


def lenient_text(raw: bytes) -> str:
    """Text factory: a row with invalid UTF-8 must not make the whole query fail."""
    return raw.decode("utf-8", "replace")


def supported(schema: object) -> TypeGuard[Schema]:
    """A Flujo file whose layout stores spans (``schema`` may be any engine's)."""
    return (
        isinstance(schema, Schema)
        and schema.supports(Capability.RUNS)
        and schema.supports(Capability.SPANS)
        and schema.has("runs", "status")
    )


_UNSET: Any = object()


class RunInfo:
    """One run as read from the DB.  Times are parsed on first use (most runs never need them)."""

    __slots__ = (
        "_end",
        "_end_raw",
        "_naive_tz",
        "_signature",
        "_start",
        "_start_raw",
        "_ws_updated",
        "anchor",
        "clock",
        "end_anchor",
        "finished",
        "pipeline_name",
        "pipeline_version",
        "rowid",
        "run_id",
        "span_count",
        "status",
    )

    def __init__(
        self,
        *,
        rowid: int,
        run_id: str,
        pipeline_name: str,
        pipeline_version: str,
        status: str,
        span_count: int,
        clock: SpanClock,
        start_raw: object = None,
        end_raw: object = None,
        ws_updated: object = None,
        naive_tz: tzinfo = UTC,
        signature: tuple[object, ...] = (),
    ) -> None:
        self.rowid = rowid
        self.run_id = run_id
        self.pipeline_name = pipeline_name
        self.pipeline_version = pipeline_version
        self.status = status  # workflow_state's when present (it knows paused/cancelled), else runs'
        self.finished = status in FINISHED
        self.span_count = span_count
        self.clock = clock
        self._start_raw = start_raw
        self._end_raw = end_raw
        self._ws_updated = ws_updated
        self._naive_tz = naive_tz
        self._signature = signature
        self._start: float | None = _UNSET
        self._end: float | None = _UNSET
        self.anchor: object = None  # runs.created_at / start_time as stored (for clock_from_rows)
        self.end_anchor: object = None  # the end runs stored for a run it says finished (for clock_from_rows)

    @property
    def start(self) -> float | None:
        """Epoch seconds of the run's start, None when unknown."""
        if self._start is _UNSET:
            self._start = _epoch(self._start_raw, UTC)
        return self._start

    @property
    def end(self) -> float | None:
        """Epoch seconds of the run's end (finished runs only), None when unknown."""
        if self._end is _UNSET:
            end = None
            if self.finished:
                end = _epoch(self._end_raw, UTC)
                if end is None:
                    end = _epoch(self._ws_updated, self._naive_tz)
            self._end = end
        return self._end

    @property
    def signature(self) -> str:
        """Changes whenever flujo re-saves the run's spans (count, open count, latest save, latest end)."""
        return "|".join(str(part) for part in self._signature)

    def __repr__(self) -> str:
        return f"RunInfo({self.run_id!r}, rowid={self.rowid}, status={self.status!r}, spans={self.span_count})"


def _qualified_exprs(schema: Schema) -> tuple[str, str, str]:
    """SQL for (run start, run end, last update) on ``runs r``, per layout."""
    start = schema.run_start_sql("r")
    nonempty = schema.dialect.nonempty
    end = "r.end_time" if schema.has("runs", "end_time") else "NULL"
    if schema.has("runs", "updated_at"):
        if end == "NULL" and not schema.dialect.has_rowid:
            end = "r.updated_at"  # flujo's Postgres runs table has no end_time: its last update ends it
        else:
            end = f"COALESCE({nonempty(end)}, {nonempty('r.updated_at')})"
    ws_updated = "ws.updated_at" if schema.has("workflow_state", "updated_at") else "NULL"
    return start, end, ws_updated


def max_run_rowid(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM runs").fetchone()[0])


def max_run_rowid_below(conn: sqlite3.Connection, rowid: int) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM runs WHERE rowid < ?", (rowid,)).fetchone()[0])


def run_id_at(conn: sqlite3.Connection, rowid: int) -> str | None:
    row = conn.execute("SELECT run_id FROM runs WHERE rowid = ?", (rowid,)).fetchone()
    return None if row is None else str(row[0])


def runs_after(conn: sqlite3.Connection, rowid: int, limit: int) -> list[tuple[int, str]]:
    return [
        (int(r), str(i))
        for r, i in conn.execute(
            "SELECT rowid, run_id FROM runs WHERE rowid > ? ORDER BY rowid LIMIT ?", (rowid, limit)
        )
    ]


def position_sql(schema: Schema, alias: str = "r") -> str:
    """A run's position in discovery order: its rowid, or on Postgres its ``created_at`` in
    microseconds (the order :mod:`~exporter.engines.flujo.traces.pgcursor` discovers runs in)."""
    if schema.dialect.has_rowid:
        return f"{alias}.rowid"
    return f"(EXTRACT(EPOCH FROM {alias}.created_at) * 1000000)::bigint"


def span_counts(conn: Connection, run_ids: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for marks, chunk in in_chunks(run_ids):
        for run_id, count in conn.execute(
            f"SELECT run_id, COUNT(*) FROM spans WHERE run_id IN ({marks}) GROUP BY run_id", chunk
        ):
            counts[run_id] = int(count)
    return counts


def count_spans_after(conn: sqlite3.Connection, rowid: int) -> tuple[int, int]:
    """(runs, spans) with a runs rowid above ``rowid`` (the part of the DB not yet discovered)."""
    runs = int(conn.execute("SELECT COUNT(*) FROM runs WHERE rowid > ?", (rowid,)).fetchone()[0])
    if not runs:
        return 0, 0
    spans = conn.execute(
        "SELECT COUNT(*) FROM spans WHERE run_id IN (SELECT run_id FROM runs WHERE rowid > ?)", (rowid,)
    ).fetchone()[0]
    return runs, int(spans)


def run_infos(conn: Connection, schema: Schema, naive_tz: tzinfo, run_ids: Sequence[str]) -> dict[str, RunInfo]:
    """Everything needed to decide on and convert each run; runs without a ``runs`` row are absent."""
    start_expr, end_expr, ws_updated = _qualified_exprs(schema)
    run_created = schema.dialect.nonempty("r.created_at") if schema.has("runs", "created_at") else "NULL"
    span_created = "MAX(s.created_at)" if schema.has("spans", "created_at") else "NULL"
    found: dict[str, RunInfo] = {}
    for marks, chunk in in_chunks(run_ids):
        aggregates = {
            row[0]: row[1:]
            for row in conn.execute(
                f"SELECT s.run_id, COUNT(*), MIN(s.start_time), MAX(s.end_time), {span_created},"
                f" SUM(CASE WHEN s.end_time IS NULL THEN 1 ELSE 0 END) FROM spans s WHERE s.run_id IN ({marks})"
                " GROUP BY s.run_id",
                chunk,
            )
        }
        sql = (
            f"SELECT {position_sql(schema)}, r.run_id, r.pipeline_name, r.pipeline_version, r.status, {start_expr},"
            f" {end_expr}, {run_created}, ws.status, {ws_updated}"
            f" FROM runs r LEFT JOIN workflow_state ws ON ws.run_id = r.run_id WHERE r.run_id IN ({marks})"
        )
        for row in conn.execute(sql, chunk):
            info = _run_info(row, aggregates.get(row[1]), naive_tz)
            found[info.run_id] = info
    return found


def runs_with_counts(
    conn: sqlite3.Connection, schema: Schema, naive_tz: tzinfo, where: str, args: Sequence[object], limit: int
) -> list[RunInfo]:
    """Runs of ``runs r`` matching ``where`` in rowid order with their span counts, in one query.

    The clock is left unset (``None``): set it with :func:`clock_from_rows` once the spans are read,
    or read the run again with :func:`run_infos` (what the replay does for runs read page by page).
    """
    start_expr, end_expr, ws_updated = _qualified_exprs(schema)
    run_created = "NULLIF(r.created_at, '')" if schema.has("runs", "created_at") else "NULL"
    sql = (
        f"SELECT r.rowid, r.run_id, r.pipeline_name, r.pipeline_version, r.status, {start_expr}, {end_expr},"
        f" {run_created}, ws.status, {ws_updated}, (SELECT COUNT(*) FROM spans s WHERE s.run_id = r.run_id)"
        f" FROM runs r LEFT JOIN workflow_state ws ON ws.run_id = r.run_id WHERE {where} ORDER BY r.rowid LIMIT ?"
    )
    found = []
    for row in conn.execute(sql, (*args, limit)):
        info = _run_info(row[:10], (row[10], None, None, None, None), naive_tz, clock=None)
        info.anchor = row[7] if row[7] is not None else row[5]
        info.end_anchor = row[6] if row[4] in FINISHED else None
        found.append(info)
    return found


def clock_from_rows(conn: Connection, info: RunInfo, rows: Sequence[SpanRow]) -> SpanClock:
    """The run's clock from all its span rows (as :func:`run_infos` computes it from aggregates)."""
    starts = [value for value in (_float(row[4]) for row in rows) if value is not None]
    first_start = min(starts) if starts else None
    if first_start is None or not is_monotonic(first_start):
        return EPOCH_CLOCK
    anchor = _instant(info.anchor, UTC)
    ended = _instant(info.end_anchor, UTC)  # written after the root span ended
    latest_created = None
    if anchor is None or ended is None:  # the spans' save time bounds the clock when the run's end does not
        row = conn.execute("SELECT MAX(created_at) FROM spans WHERE run_id = ?", (info.run_id,)).fetchone()
        latest_created = _instant(row[0], UTC)
    ends = [value for value in (_float(row[5]) for row in rows) if value is not None]
    return clock_for_run(
        min_start=first_start,
        max_end=max(ends) if ends else None,
        run_created_at=anchor,
        latest_span_created_at=latest_created,
        run_ended_at=ended,
    )


def _run_info(
    row: Sequence[object], agg: Sequence[object] | None, naive_tz: tzinfo, *, clock: SpanClock | None = EPOCH_CLOCK
) -> RunInfo:
    rowid, run_id, pipeline, version, run_status, start_raw, end_raw, created_raw, ws_status, ws_updated = row
    status = str(ws_status) if ws_status is not None else str(run_status or "unknown")
    count, min_start, max_end, latest_created, open_count = agg if agg is not None else (0, None, None, None, 0)
    first_start = _float(min_start)
    if clock is None:
        pass  # set later from the rows
    elif first_start is not None and not is_monotonic(first_start):
        clock = EPOCH_CLOCK  # 0.4.x: epoch values, no anchor needed
    else:
        clock = clock_for_run(
            min_start=first_start if first_start is not None else 0.0,
            max_end=_float(max_end),
            run_created_at=_instant(created_raw, UTC) or _instant(start_raw, UTC),
            latest_span_created_at=_instant(latest_created, UTC),
            run_ended_at=_instant(end_raw, UTC) if run_status in FINISHED else None,  # written after the root ends
        )
    return RunInfo(
        rowid=int(rowid),  # type: ignore[call-overload]
        run_id=str(run_id),
        pipeline_name=str(pipeline or "unknown"),
        pipeline_version=str(version or ""),
        status=status,
        span_count=int(count or 0),  # type: ignore[call-overload]
        clock=clock,  # type: ignore[arg-type]
        start_raw=start_raw,
        end_raw=end_raw,
        ws_updated=ws_updated,
        naive_tz=naive_tz,
        signature=(count, open_count, latest_created, max_end),
    )


def _fetch(conn: Connection, sql: str, args: Sequence[object]) -> list[SpanRow]:
    """Rows of ``sql`` (``SELECT {_SPAN_COLUMNS} FROM spans ...``), each value bounded in size.

    Text that is not valid UTF-8 is decoded with replacement characters instead of failing the whole
    query (the fast default decoder is tried first).  A page holding an oversized value is read again
    row by row (:func:`_fetch_bounded`).  Postgres holds valid UTF-8 only and bounds the values itself."""
    if not isinstance(conn, sqlite3.Connection):
        return list(conn.execute(sql.replace(_SPAN_COLUMNS, _PG_SPAN_COLUMNS, 1), args).fetchall())
    old_limit = conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    try:
        try:
            return _fetch_lenient(conn, sql, args)
        except sqlite3.DataError:  # "string or blob too big": refused before it was loaded
            pass
        return _fetch_bounded(conn, sql, args)
    finally:
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, old_limit)


def _fetch_lenient(conn: sqlite3.Connection, sql: str, args: Sequence[object]) -> list[Any]:
    factory = conn.text_factory
    conn.text_factory = str  # the reader's connection decodes with surrogateescape: spans want U+FFFD
    try:
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "decode" not in str(exc).lower():
                raise
        conn.text_factory = lenient_text
        return conn.execute(sql, args).fetchall()
    finally:
        conn.text_factory = factory


_COLUMNS = tuple(column.strip() for column in _SPAN_COLUMNS.split(","))


def _fetch_bounded(conn: sqlite3.Connection, sql: str, args: Sequence[object]) -> list[SpanRow]:
    """The rows of ``sql`` one by one, each text read through blob I/O, an oversized one truncated."""
    rowids = [int(r[0]) for r in conn.execute(sql.replace(_SPAN_COLUMNS, "rowid", 1), args)]
    rows: list[SpanRow] = []
    kinds_sql = f"SELECT {', '.join(f'typeof({c})' for c in _COLUMNS)} FROM spans WHERE rowid = ?"
    for rowid in rowids:
        kinds = conn.execute(kinds_sql, (rowid,)).fetchone()  # typeof() does not load the values
        if kinds is None:
            continue
        row = tuple(
            _bounded_value(conn, column, str(kind), rowid) for column, kind in zip(_COLUMNS, kinds, strict=True)
        )
        rows.append(row)  # type: ignore[arg-type]
    return rows


def _bounded_value(conn: sqlite3.Connection, column: str, kind: str, rowid: int) -> object:
    if kind not in ("text", "blob"):
        return conn.execute(f"SELECT {column} FROM spans WHERE rowid = ?", (rowid,)).fetchone()[0]
    with conn.blobopen("spans", column, rowid, readonly=True) as blob:
        size = len(blob)
        if size <= MAX_VALUE_BYTES:
            data = blob.read()
            return data.decode("utf-8", "replace") if kind == "text" else data
        prefix = blob.read(TRUNCATED_PREFIX_BYTES).decode("utf-8", "ignore")  # may end mid-character
    log.warning(
        "traces: span row %d has %d bytes of %s; exported truncated to %d", rowid, size, column, TRUNCATED_PREFIX_BYTES
    )
    if column == "attributes":
        return json.dumps({RAW_KEY: prefix, TRUNCATED_KEY: size})
    return prefix


def spans_of(conn: Connection, run_ids: Sequence[str]) -> list[SpanRow]:
    """All span rows of these runs, by run then span id (stable across flujo's rewrites)."""
    rows: list[SpanRow] = []
    for marks, chunk in in_chunks(run_ids):
        sql = f"SELECT {_SPAN_COLUMNS} FROM spans WHERE run_id IN ({marks}) ORDER BY run_id, span_id"
        rows.extend(_fetch(conn, sql, chunk))
    return rows


def span_page(conn: Connection, run_id: str, after_span_id: str | None, limit: int) -> list[SpanRow]:
    """One page of a large run's spans in span id order (keyset pagination)."""
    if after_span_id is None:
        sql = f"SELECT {_SPAN_COLUMNS} FROM spans WHERE run_id = ? ORDER BY span_id LIMIT ?"
        return _fetch(conn, sql, (run_id, limit))
    sql = f"SELECT {_SPAN_COLUMNS} FROM spans WHERE run_id = ? AND span_id > ? ORDER BY span_id LIMIT ?"
    return _fetch(conn, sql, (run_id, after_span_id, limit))


def last_child_ends(conn: Connection, run_id: str) -> dict[str, object]:
    """Latest end (or start when open) of each span's direct children, for a run read page by page."""
    return {
        str(parent): end
        for parent, end in conn.execute(
            "SELECT parent_span_id, MAX(COALESCE(end_time, start_time)) FROM spans"
            " WHERE run_id = ? AND parent_span_id IS NOT NULL GROUP BY parent_span_id",
            (run_id,),
        )
    }


def rowids_of(conn: sqlite3.Connection, run_ids: Iterable[str]) -> dict[str, int]:
    ids = list(run_ids)
    found: dict[str, int] = {}
    for marks, chunk in in_chunks(ids):
        for run_id, rowid in conn.execute(f"SELECT run_id, rowid FROM runs WHERE run_id IN ({marks})", chunk):
            found[str(run_id)] = int(rowid)
    return found


def unfinished_runs_upto(conn: sqlite3.Connection, rowid: int) -> list[tuple[int, str]]:
    """Runs at or below ``rowid`` still in progress (for ``start_at: end``)."""
    rows = conn.execute(
        "SELECT r.rowid, r.run_id, r.status, ws.status FROM runs r LEFT JOIN workflow_state ws"
        " ON ws.run_id = r.run_id WHERE r.rowid <= ?"
        f" AND (r.status NOT IN {FINISHED_SQL} OR ws.status IN {ACTIVE_SQL})",
        (rowid,),
    )
    result = []
    for r, run_id, run_status, ws_status in rows:
        status = ws_status if ws_status is not None else run_status
        if status not in FINISHED:
            result.append((int(r), str(run_id)))
    return result


def epoch_of(value: object, naive_tz: tzinfo = UTC) -> float | None:
    """SQL function helper: a stored timestamp as epoch seconds, None when missing or unparseable."""
    return _epoch(value, naive_tz)


def _epoch(value: object, naive_tz: tzinfo) -> float | None:
    if type(value) is str and len(value) >= 19 and value[10] in "T ":
        try:  # the common ISO-8601 forms, without the general parser's detours
            instant = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return (instant if instant.tzinfo is not None else instant.replace(tzinfo=naive_tz)).timestamp()
    try:
        return to_epoch(value, naive_tz)
    except TimestampError:
        return None


def _instant(value: object, naive_tz: tzinfo) -> datetime | None:
    try:
        return parse_instant(value, naive_tz)
    except TimestampError:
        return None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
