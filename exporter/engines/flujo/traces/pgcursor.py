"""Discovering runs on Postgres, where there is no rowid: a re-read window on ``runs.created_at``.

On SQLite a run keeps its rowid and new runs get higher ones, so "rows above the last rowid" finds
each run once.  On Postgres nothing grows in commit order: flujo's ``created_at`` is the writer's
clock at the insert, and the transaction commits later; a run can become visible after a newer one
was already read (two writers, or one slow commit).  So discovery re-reads every refresh the runs
created within :data:`REREAD_WINDOW` below the newest ``created_at`` seen, and skips those already
discovered: the cursor holds that newest instant and the run ids discovered inside the window
(JSON ``{"newest": ISO instant, "seen": [run ids]}``; the ids are pruned once the window has passed
them).  A run that
becomes visible later than the window after newer ones, or whose writer's clock is that far behind,
is missed (documented in the README).

Nothing is exported twice across the window either: a run discovered again would be a new pending
unit, but it is in the cursor's set; a run's spans re-saved by flujo's ``save_trace`` (delete and
re-insert, new ``SERIAL`` ids) are recognised by their stored span ids, as on SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

from exporter.engines.flujo.statuses import FINISHED_STATUSES
from exporter.reader.sql import Connection, in_chunks
from exporter.traces.source import Found

REREAD_WINDOW = timedelta(minutes=15)
_POSITION = "(EXTRACT(EPOCH FROM r.created_at) * 1000000)::bigint"


class Cursor:
    def __init__(self, newest: datetime | None = None, seen: set[str] | None = None) -> None:
        self.newest = newest
        self.seen = seen or set()

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        try:
            data = json.loads(text)
            newest = datetime.fromisoformat(data["newest"])
            seen = {str(run_id) for run_id in data["seen"]}
        except (ValueError, TypeError, KeyError):
            return cls()  # not ours (a SQLite rowid cursor): discover from the start, as a new state file does
        return cls(newest, seen)

    def __str__(self) -> str:
        if self.newest is None:
            return ""
        return json.dumps({"newest": self.newest.isoformat(), "seen": sorted(self.seen)}, separators=(",", ":"))

    @property
    def floor(self) -> datetime | None:
        return None if self.newest is None else self.newest - REREAD_WINDOW


def discover(conn: Connection, text: str | None, limit: int) -> list[Found]:
    """Up to ``limit`` runs not discovered yet, in (created_at, run_id) order.  The cursors seen in
    the window are skipped; reading ``limit`` plus their number rows is enough to find ``limit`` new
    ones (each seen id is at most one of the rows read)."""
    cursor = Cursor.parse(text)
    floor = cursor.floor
    where, params = ("WHERE r.created_at >= ?", [floor]) if floor is not None else ("", [])
    read = limit + len(cursor.seen)
    rows = conn.execute(
        f"SELECT r.run_id, r.created_at, {_POSITION}, (SELECT COUNT(*) FROM spans s WHERE s.run_id = r.run_id)"
        f" FROM runs r {where} ORDER BY r.created_at, r.run_id LIMIT ?",
        (*params, read),
    ).fetchall()
    fresh = [(str(run_id), created, int(position), int(spans)) for run_id, created, position, spans in rows]
    fresh = [row for row in fresh if row[0] not in cursor.seen][:limit]
    if not fresh:
        return []
    created_of = {str(run_id): created for run_id, created, _, _ in rows}
    complete = len(rows) < read  # every run from the old floor on was read: an id not among them is gone
    # Each unit's cursor is the one just past it (a replay records the cursor of the last unit wholly
    # delivered and resumes there): the newest instant up to it, and the ids seen up to it.
    found, newest, seen = [], cursor.newest, set(cursor.seen)
    for run_id, created, position, spans in fresh:
        newest = created if newest is None else max(newest, created)
        seen.add(run_id)
        floor = newest - REREAD_WINDOW
        seen = {
            i for i in seen if (i in created_of and created_of[i] >= floor) or (i not in created_of and not complete)
        }
        found.append(Found(position, run_id, spans, str(Cursor(newest, seen))))
    return found


def at_end(conn: Connection) -> tuple[str, list[Found]]:
    """The cursor past every run (the newest ``created_at`` with the runs in the window below it),
    and the runs not finished yet."""
    (newest,) = conn.execute("SELECT MAX(created_at) FROM runs").fetchone()
    if newest is None:
        return "", []
    seen = {
        str(run_id)
        for (run_id,) in conn.execute("SELECT run_id FROM runs WHERE created_at >= ?", (newest - REREAD_WINDOW,))
    }
    finished = ", ".join(f"'{status}'" for status in FINISHED_STATUSES)
    rows = conn.execute(
        f"SELECT r.run_id, {_POSITION}, (SELECT COUNT(*) FROM spans s WHERE s.run_id = r.run_id)"
        " FROM runs r LEFT JOIN workflow_state ws ON ws.run_id = r.run_id"
        f" WHERE COALESCE(ws.status, r.status) NOT IN ({finished}) ORDER BY r.created_at, r.run_id"
    )
    cursor = str(Cursor(newest, seen))
    return cursor, [Found(int(position), str(run_id), int(spans), cursor) for run_id, position, spans in rows]


def behind(conn: Connection, text: str | None, unit_ids: Sequence[str]) -> tuple[set[str], set[str]]:
    """(which of ``unit_ids`` exist, which of those were discovered: below the window or in it)."""
    cursor = Cursor.parse(text)
    created: dict[str, datetime] = {}
    for marks, chunk in in_chunks(unit_ids):
        for run_id, at in conn.execute(f"SELECT run_id, created_at FROM runs WHERE run_id IN ({marks})", chunk):
            created[str(run_id)] = at
    if cursor.newest is None:
        return set(created), set()
    floor = cursor.floor
    assert floor is not None
    return set(created), {i for i, at in created.items() if i in cursor.seen or at < floor}


def count_after(conn: Connection, text: str | None) -> tuple[int, int]:
    """(runs, spans) not discovered yet."""
    cursor = Cursor.parse(text)
    if cursor.floor is None:
        runs = int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        spans = int(conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0]) if runs else 0
        return runs, spans
    rows = conn.execute(
        "SELECT r.run_id, (SELECT COUNT(*) FROM spans s WHERE s.run_id = r.run_id) FROM runs r WHERE r.created_at >= ?",
        (cursor.floor,),
    )
    new = [int(spans) for run_id, spans in rows if str(run_id) not in cursor.seen]
    return len(new), sum(new)
