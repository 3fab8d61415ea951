"""Reading seeknal runs for their traces: which exist, in which order, and which nodes each executed.

A run's nodes include rows carried over from earlier runs (seeknal keeps a node's old row when it
does not run it again): a node was *executed* in run R when its ``last_run`` is at or after R's
``last_run`` (instants in the writer's zone, never compared as text) and its status is not
``cached``, ``skipped`` or ``pending``.  ``last_run`` is stamped after the node ran, so it is the
node's end and ``last_run - duration_ms`` its start.  A row whose ``last_run`` cannot be read is left
out (whether it ran in this run cannot be told); the metrics count it as a bad value.

Order (the discovery cursor):

* database backend: ``run_state.rowid``.  ``set_run_state`` upserts the run (``ON CONFLICT DO
  UPDATE`` keeps the rowid) and only ``delete_run`` removes one, so rowids grow in the order runs
  were first stored, whatever the writer's clock said: ``last_run`` order would skip a run stored
  late (the fixture's crashed run) or one stamped in a repeated DST hour.  A rowid reused after the
  newest runs were deleted is caught by ``check_cursor`` (re-sent, never skipped).
* file backend (``target/``): the loaded DB is rebuilt whenever a file changes, so its rowids mean
  nothing across loads; ``run_id`` is the identity, and seeknal's ``%Y%m%d_%H%M%S`` run ids (the
  writer's local start time) sort in start order.  One new ``run_state.json`` (its previous content
  kept as a ``.bak``) adds one run after the cursor.  A run id that sorts below the cursor (a run
  started in the hour a DST change repeats, or a clock set back) would not be discovered.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from exporter.engines.seeknal.jsonfile import FILE_LAYOUT
from exporter.engines.seeknal.layout import NODES, RUNS, Schema
from exporter.engines.seeknal.statuses import CACHED, FAILED, PENDING, RUNNING, SKIPPED, node_status
from exporter.reader.sql import in_chunks
from exporter.timeparse import TimestampError, parse_instant

NOT_EXECUTED = frozenset({CACHED, SKIPPED, PENDING})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
RUN_ID_PREFIX = "run_id:"

Key = int | str  # a run's place in the order: its rowid, or its run id (file backend)


def nanos_of(value: object, tz: tzinfo) -> int | None:
    """A stored naive local time as Unix nanoseconds (exact to the microsecond); ``None`` when unreadable."""
    try:
        at = parse_instant(value, tz)
    except TimestampError:
        return None
    if at is None:
        return None
    return ((at - _EPOCH) // _MICROSECOND) * 1000


@dataclass(frozen=True)
class Order:
    """How the runs of one layout are ordered (see the module's docstring)."""

    by_run_id: bool

    @classmethod
    def of(cls, schema: Schema) -> Order:
        return cls(schema.layout == FILE_LAYOUT)

    @property
    def column(self) -> str:
        return "run_id" if self.by_run_id else "rowid"

    def parse(self, cursor: str | None) -> Key | None:
        """``None``: from the beginning (also for a cursor of the other layout: re-sending is deduplicated
        by the ids, skipping would lose runs)."""
        if not cursor:
            return None
        if self.by_run_id:
            return cursor.removeprefix(RUN_ID_PREFIX) if cursor.startswith(RUN_ID_PREFIX) else None
        return int(cursor) if cursor.isdigit() else None

    def text(self, key: Key) -> str:
        return f"{RUN_ID_PREFIX}{key}" if self.by_run_id else str(key)

    def key(self, rowid: int, run_id: str) -> Key:
        return run_id if self.by_run_id else rowid

    def before_or_at(self, key: Key, cursor: Key) -> bool:
        return str(key) <= str(cursor) if self.by_run_id else int(key) <= int(cursor)


def runs_after(conn: sqlite3.Connection, order: Order, after: Key | None, limit: int) -> list[tuple[int, str]]:
    """(rowid, run id) of the runs after ``after``, in order."""
    where, params = ("", ()) if after is None else (f"WHERE {order.column} > ?", (after,))
    sql = f"SELECT rowid, run_id FROM {RUNS} {where} ORDER BY {order.column} LIMIT ?"
    return [(int(r), str(i)) for r, i in conn.execute(sql, (*params, limit))]


def last_key(conn: sqlite3.Connection, order: Order) -> Key | None:
    row = conn.execute(f"SELECT MAX({order.column}) FROM {RUNS}").fetchone()
    return None if row[0] is None else row[0] if order.by_run_id else int(row[0])


def keys_of(conn: sqlite3.Connection, order: Order, run_ids: Sequence[str]) -> dict[str, Key]:
    found: dict[str, Key] = {}
    for marks, chunk in in_chunks(run_ids):
        for rowid, run_id in conn.execute(f"SELECT rowid, run_id FROM {RUNS} WHERE run_id IN ({marks})", chunk):
            found[str(run_id)] = order.key(int(rowid), str(run_id))
    return found


def run_at(conn: sqlite3.Connection, rowid: int) -> str | None:
    row = conn.execute(f"SELECT run_id FROM {RUNS} WHERE rowid = ?", (rowid,)).fetchone()
    return None if row is None else str(row[0])


def max_rowid_below(conn: sqlite3.Connection, rowid: int) -> int:
    row = conn.execute(f"SELECT MAX(rowid) FROM {RUNS} WHERE rowid < ?", (rowid,)).fetchone()
    return 0 if row[0] is None else int(row[0])


@dataclass(frozen=True)
class Executed:
    """A node executed in a run: what its span's place and times are made of."""

    node_id: str
    status: str
    start_ns: int
    end_ns: int  # its last_run; for a running node its latest write


@dataclass
class RunInfo:
    """One run as read now (a :class:`~exporter.traces.source.UnitInfo`)."""

    run_id: str
    rowid: int
    status: str  # derived from every node row of the run, as seeknal_runs counts it
    last_run_ns: int | None
    nodes: int  # rows of the run, carried-over ones included
    executed: tuple[Executed, ...]
    signature: str
    failed: tuple[str, ...] = field(default=())  # node ids of the failed rows

    @property
    def finished(self) -> bool:
        return self.status != RUNNING

    @property
    def start_ns(self) -> int | None:
        return min((n.start_ns for n in self.executed), default=self.last_run_ns)

    @property
    def end_ns(self) -> int | None:
        return max((n.end_ns for n in self.executed), default=self.last_run_ns)

    @property
    def start(self) -> float | None:
        at = self.start_ns
        return None if at is None else at / 1e9

    @property
    def end(self) -> float | None:
        at = self.end_ns
        return None if at is None or not self.finished else at / 1e9

    @property
    def span_count(self) -> int:
        return len(self.executed) + 1  # the run's own span


def run_infos(conn: sqlite3.Connection, tz: tzinfo, run_ids: Iterable[str]) -> dict[str, RunInfo]:
    """The runs of ``run_ids`` that exist, read through the run_id index."""
    found: dict[str, RunInfo] = {}
    for marks, chunk in in_chunks(list(dict.fromkeys(run_ids))):
        runs = {
            str(run_id): (int(rowid), last_run)
            for rowid, run_id, last_run in conn.execute(
                f"SELECT rowid, run_id, last_run FROM {RUNS} WHERE run_id IN ({marks})", chunk
            )
        }
        rows: dict[str, list[tuple[object, ...]]] = {run_id: [] for run_id in runs}
        for row in conn.execute(
            f"SELECT run_id, node_id, last_run, status, duration_ms FROM {NODES} WHERE run_id IN ({marks})"
            " ORDER BY run_id, id",
            chunk,
        ):
            if str(row[0]) in rows:
                rows[str(row[0])].append(row[1:])
        for run_id, (rowid, last_run) in runs.items():
            found[run_id] = _info(run_id, rowid, nanos_of(last_run, tz), rows[run_id], tz)
    return found


def _info(run_id: str, rowid: int, run_ns: int | None, rows: list[tuple[object, ...]], tz: tzinfo) -> RunInfo:
    statuses = []
    executed = []
    digest = hashlib.sha256()
    for node_id, last_run, raw_status, duration_ms in rows:
        status = node_status(raw_status if isinstance(raw_status, str) else None)
        statuses.append((str(node_id), status))
        digest.update(repr((node_id, last_run, raw_status, duration_ms)).encode("utf-8", "surrogatepass"))
        if status in NOT_EXECUTED or not isinstance(node_id, str):
            continue
        end = nanos_of(last_run, tz)
        if end is None or (run_ns is not None and end < run_ns):
            continue  # unreadable, or carried over from an earlier run
        ms = duration_ms if isinstance(duration_ms, int | float) and not isinstance(duration_ms, bool) else 0
        executed.append(Executed(node_id, status, end - round(ms * 1_000_000), end))
    kinds = {status for _, status in statuses}
    derived = FAILED if FAILED in kinds else RUNNING if kinds & {RUNNING, PENDING} else "success"
    executed.sort(key=lambda n: (n.start_ns, n.node_id))
    return RunInfo(
        run_id=run_id,
        rowid=rowid,
        status=derived,
        last_run_ns=run_ns,
        nodes=len(rows),
        executed=tuple(executed),
        signature=f"{len(rows)}|{derived}|{digest.hexdigest()[:16]}",
        failed=tuple(node for node, status in statuses if status == FAILED),
    )


@dataclass(frozen=True)
class NodeDetails:
    """What a node span shows beyond its times (read when the run is encoded)."""

    hash: object
    row_count: object
    metadata: object
    fingerprint: object
    iceberg_snapshot_id: object


def node_details(
    conn: sqlite3.Connection, schema: Schema, run_id: str, node_ids: Sequence[str]
) -> dict[str, NodeDetails]:
    extra = ", ".join(c if c in schema.span_columns else "NULL" for c in ("fingerprint_json", "iceberg_snapshot_id"))
    found: dict[str, NodeDetails] = {}
    for marks, chunk in in_chunks(node_ids):
        for node_id, *values in conn.execute(
            f"SELECT node_id, hash, row_count, metadata_json, {extra} FROM {NODES}"
            f" WHERE run_id = ? AND node_id IN ({marks})",
            (run_id, *chunk),
        ):
            found[str(node_id)] = NodeDetails(*values)
    return found
