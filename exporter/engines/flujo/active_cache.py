"""The running and paused rows of a flujo 0.4.x DB, kept across refreshes.

flujo 0.4.x saves ``workflow_state`` with ``INSERT OR REPLACE``: every save deletes the row and
inserts it again under a new rowid, so a rowid that is still active with the same status still
holds the same row.  A refresh then reads only ``(rowid, status)`` through the status index and
fetches the rows it has not seen: a DB holding 40 000 crashed runs costs ~12 ms instead of
~100 ms of table lookups.  SQLite hands out the highest rowids again after they were deleted, so
rows near the top of the table are always re-read.  Layouts whose writers update rows in place
(0.6.x, the hybrid, our own backend) keep rowids across saves and are read in full every time.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime, tzinfo

from exporter.engines.flujo import workflows
from exporter.engines.flujo.layout import Layout, Schema
from exporter.engines.flujo.statuses import ACTIVE_SQL
from exporter.reader.badvalues import BadValue, shown
from exporter.reader.sql import Connection
from exporter.timeparse import TimestampError, not_after, parse_instant

REREAD_TOP = 10_000

# pipeline, status, last update (Unix time, None when unparseable or in the future), is_background
ParsedRow = tuple[str, str, float | None, bool]


class ActiveRowCache:
    def __init__(self) -> None:
        self._rows: dict[int, ParsedRow] = {}

    def rows(
        self, conn: Connection, schema: Schema, naive_tz: tzinfo, now: datetime, bad: list[BadValue]
    ) -> Iterator[ParsedRow]:
        """The active rows as of ``now`` (streamed: ``bad`` is complete once they are consumed).  Rows
        holding a bad value are never cached: they are read, and reported, again on every refresh,
        like on the layouts read in full."""
        if schema.layout is not Layout.V0435:
            self._rows = {}
            for row in workflows.active_rows(conn, schema, bad):
                yield _parse(row, naive_tz, now, bad)[0]
            return
        top = int(conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM workflow_state").fetchone()[0]) - REREAD_TOP
        current = conn.execute(f"SELECT rowid, status FROM workflow_state WHERE status IN {ACTIVE_SQL}")
        kept: dict[int, ParsedRow] = {}
        served: list[ParsedRow] = []
        missing: list[int] = []
        for rowid, status in current:
            cached = self._rows.get(rowid)
            if cached is not None and cached[1] == status and rowid <= top:
                kept[rowid] = cached
                served.append(cached)
            else:
                missing.append(rowid)
        for rowid, row in workflows.active_rows_by_rowid(conn, schema, missing, bad):
            parsed, sound = _parse(row, naive_tz, now, bad)
            served.append(parsed)
            if sound:
                kept[rowid] = parsed
        self._rows = kept
        yield from served


def _parse(row: workflows.ActiveRow, naive_tz: tzinfo, now: datetime, bad: list[BadValue]) -> tuple[ParsedRow, bool]:
    """The parsed row and whether it is sound.  An unparseable or future ``updated_at`` is reported
    and read as unknown: the row still counts as active but is never judged stuck or oldest."""
    run_id, pipeline, status, updated_raw, background = row
    sound = True
    try:
        updated = parse_instant(updated_raw, naive_tz)
    except TimestampError:
        bad.append(BadValue("workflow_state", "updated_at", run_id, shown(updated_raw)))
        updated, sound = None, False
    if updated is not None:
        clamped = not_after(updated, now)
        if clamped is None:
            bad.append(BadValue("workflow_state", "updated_at", run_id, f"{shown(updated_raw)} (in the future)"))
            sound = False
        elif clamped != updated:
            sound = False  # read as "now" this time: parsed again next refresh
        updated = clamped
    # Interned: thousands of rows share a handful of pipeline and status names.
    stamp = None if updated is None else updated.timestamp()
    return (sys.intern(pipeline), sys.intern(status), stamp, bool(background)), sound
