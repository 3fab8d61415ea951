"""Reading pynenc invocation trees: which exist, how far they are, and what their spans are made of.

pynenc stores no spans; its append-only history (one row per status transition) and the invocation
table's ``parent_invocation_id`` rebuild them.  A *tree* is a top-level invocation (no parent) with
every invocation below it, followed through ``parent_invocation_id`` (never ``workflow_id``: 0.1.x
gives every task a workflow, 0.3+ only ``@app.workflow`` tasks, and a workflow's children may be
plain tasks).  Trees are discovered by the top-level invocation's ``state_backend_invocations.rowid``
(pynenc appends those rows and never updates or deletes them, short of a purge), per app; the
children of a tree are collected with a recursive query over pynenc's own index on
``parent_invocation_id`` whenever the tree is read, so children registered after discovery count.

An invocation's status is the orchestrator's (written atomically on every transition), or, without
an orchestrator row (purged), its latest history row's.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from exporter.engines.pynenc.layout import EXCEPTIONS, HISTORY, INVOCATIONS, SB_INVOCATIONS, AppTables, Schema
from exporter.engines.pynenc.statuses import FINAL_STATUSES, REGISTERED, RUNNING, sql_list
from exporter.engines.pynenc.values import epoch
from exporter.reader.sql import in_chunks

FINAL = frozenset(FINAL_STATUSES)


def span_apps(schema: object) -> tuple[AppTables, ...]:
    """The apps of a pynenc file whose tables have what trees are rebuilt from."""
    if not isinstance(schema, Schema):
        return ()
    return tuple(app for app in schema.apps if app.has(HISTORY) and app.has(SB_INVOCATIONS))


# --- the cursor: per app prefix, the highest top-level rowid discovered -------------------------------


def parse_cursor(cursor: str | None) -> dict[str, int]:
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
    except ValueError:
        return {}  # another engine's cursor: start over (re-sending deduplicates, skipping would lose)
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}


def cursor_text(cursor: Mapping[str, int]) -> str:
    return json.dumps(dict(sorted(cursor.items())), separators=(",", ":"))


def tops_after(conn: sqlite3.Connection, app: AppTables, rowid: int, limit: int) -> list[tuple[int, str]]:
    """(rowid, invocation id) of top-level invocations after ``rowid``, in rowid order."""
    return [
        (int(r), str(i))
        for r, i in conn.execute(
            f"SELECT rowid, invocation_id FROM {app.q(SB_INVOCATIONS)}"
            " WHERE rowid > ? AND parent_invocation_id IS NULL ORDER BY rowid LIMIT ?",
            (rowid, limit),
        )
    ]


def max_rowid(conn: sqlite3.Connection, app: AppTables) -> int:
    return int(conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {app.q(SB_INVOCATIONS)}").fetchone()[0])


def top_rowids(conn: sqlite3.Connection, app: AppTables, ids: Sequence[str]) -> dict[str, int]:
    """The rowids of those of ``ids`` that are this app's top-level invocations."""
    found: dict[str, int] = {}
    for marks, chunk in in_chunks(ids):
        for invocation_id, rowid in conn.execute(
            f"SELECT invocation_id, rowid FROM {app.q(SB_INVOCATIONS)}"
            f" WHERE invocation_id IN ({marks}) AND parent_invocation_id IS NULL",
            chunk,
        ):
            found[str(invocation_id)] = int(rowid)
    return found


def members(conn: sqlite3.Connection, app: AppTables, tops: Sequence[str]) -> dict[str, list[tuple[str, str | None]]]:
    """Per top-level id: (invocation id, parent id) of its tree, the top first (a cycle ends it)."""
    found: dict[str, list[tuple[str, str | None]]] = {top: [(top, None)] for top in tops}
    table = app.q(SB_INVOCATIONS)
    for marks, chunk in in_chunks(tops):
        rows = conn.execute(
            f"WITH RECURSIVE tree(top, id) AS (SELECT invocation_id, invocation_id FROM {table}"
            f" WHERE invocation_id IN ({marks})"
            f" UNION SELECT tree.top, c.invocation_id FROM {table} c JOIN tree ON c.parent_invocation_id = tree.id)"
            f" SELECT tree.top, tree.id, c.parent_invocation_id FROM tree JOIN {table} c ON c.invocation_id = tree.id"
            " WHERE tree.id != tree.top",
            chunk,
        )
        for top, invocation_id, parent in rows:
            found[str(top)].append((str(invocation_id), None if parent is None else str(parent)))
    return found


def count_trees_after(conn: sqlite3.Connection, app: AppTables, rowid: int) -> tuple[int, int]:
    """(trees, invocations in them) whose top-level invocation's rowid is above ``rowid``."""
    table = app.q(SB_INVOCATIONS)
    row = conn.execute(
        f"WITH RECURSIVE tree(top, id) AS (SELECT invocation_id, invocation_id FROM {table}"
        " WHERE rowid > ? AND parent_invocation_id IS NULL"
        f" UNION SELECT tree.top, c.invocation_id FROM {table} c JOIN tree ON c.parent_invocation_id = tree.id)"
        " SELECT COUNT(DISTINCT top), COUNT(*) FROM tree",
        (rowid,),
    ).fetchone()
    return int(row[0]), int(row[1])


def statuses(conn: sqlite3.Connection, app: AppTables, ids: Sequence[str]) -> dict[str, str]:
    """Each invocation's current status: the orchestrator's, else its latest history row's."""
    found: dict[str, str] = {}
    if app.has(INVOCATIONS):
        for marks, chunk in in_chunks(ids):
            for invocation_id, status in conn.execute(
                f"SELECT invocation_id, status FROM {app.q(INVOCATIONS)} WHERE invocation_id IN ({marks})", chunk
            ):
                if isinstance(status, str):
                    found[str(invocation_id)] = status
    missing = [i for i in ids if i not in found]
    for marks, chunk in in_chunks(missing):
        for invocation_id, status in conn.execute(
            f"SELECT invocation_id, history_status FROM {app.q(HISTORY)} h WHERE invocation_id IN ({marks})"
            f" AND rowid = (SELECT rowid FROM {app.q(HISTORY)} WHERE invocation_id = h.invocation_id"
            " ORDER BY history_timestamp DESC, rowid DESC LIMIT 1)",
            chunk,
        ):
            found[str(invocation_id)] = str(status)
    return found


def unfinished_tops(conn: sqlite3.Connection, app: AppTables) -> list[tuple[int, str]]:
    """Top-level invocations not in a final status (for ``start_at: end``)."""
    found: list[tuple[int, str]] = []
    after = 0
    while True:
        page = tops_after(conn, app, after, 1000)
        if not page:
            return found
        after = page[-1][0]
        current = statuses(conn, app, [i for _, i in page])
        found.extend((r, i) for r, i in page if current.get(i) not in FINAL)


@dataclass
class HistoryAggregate:
    rows: int = 0
    latest: float = 0.0
    first_registered: float | None = None
    first_running: float | None = None
    first_any: float | None = None
    first_final: float | None = None


def history_aggregates(conn: sqlite3.Connection, app: AppTables, ids: Sequence[str]) -> dict[str, HistoryAggregate]:
    numeric = "typeof(history_timestamp) IN ('real', 'integer')"
    found: dict[str, HistoryAggregate] = {}
    for marks, chunk in in_chunks(ids):
        for invocation_id, rows, latest, registered, running, first, final in conn.execute(
            f"SELECT invocation_id, COUNT(*), MAX(CASE WHEN {numeric} THEN history_timestamp END),"
            f" MIN(CASE WHEN history_status = '{REGISTERED}' AND {numeric} THEN history_timestamp END),"
            f" MIN(CASE WHEN history_status = '{RUNNING}' AND {numeric} THEN history_timestamp END),"
            f" MIN(CASE WHEN {numeric} THEN history_timestamp END),"
            f" MIN(CASE WHEN history_status IN {sql_list(FINAL_STATUSES)} AND {numeric} THEN history_timestamp END)"
            f" FROM {app.q(HISTORY)} WHERE invocation_id IN ({marks}) GROUP BY invocation_id",
            chunk,
        ):
            found[str(invocation_id)] = HistoryAggregate(
                int(rows), epoch(latest) or 0.0, epoch(registered), epoch(running), epoch(first), epoch(final)
            )
    return found


@dataclass
class TreeInfo:
    """One invocation tree as read now (a :class:`~exporter.traces.source.UnitInfo`)."""

    run_id: str  # the top-level invocation id
    app: AppTables
    rowid: int
    status: str  # the top-level invocation's
    start: float | None  # its first ``registered`` row (else first ``running``, else first row)
    end: float | None  # its final row, when final
    signature: str
    span_count: int
    members: list[tuple[str, str | None]] = field(repr=False, default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in FINAL


def tree_infos(conn: sqlite3.Connection, apps: Iterable[AppTables], ids: Sequence[str]) -> dict[str, TreeInfo]:
    """The trees of those of ``ids`` that are top-level invocations, with their members."""
    found: dict[str, TreeInfo] = {}
    left = list(ids)
    for app in apps:
        if not left:
            break
        rowids = top_rowids(conn, app, left)
        if not rowids:
            continue
        left = [i for i in left if i not in rowids]
        tree = members(conn, app, list(rowids))
        everyone = [m for top in rowids for m, _ in tree[top]]
        history = history_aggregates(conn, app, everyone)
        current = statuses(conn, app, list(rowids))
        for top, rowid in rowids.items():
            own = history.get(top, HistoryAggregate())
            status = current.get(top, "unknown")
            rows = sum(history[m].rows for m, _ in tree[top] if m in history)
            latest = max((history[m].latest for m, _ in tree[top] if m in history), default=0.0)
            start = own.first_registered if own.first_registered is not None else own.first_running
            found[top] = TreeInfo(
                run_id=top,
                app=app,
                rowid=rowid,
                status=status,
                start=start if start is not None else own.first_any,
                end=own.first_final if status in FINAL else None,
                signature=f"{len(tree[top])}|{rows}|{latest!r}|{status}",
                span_count=len(tree[top]),
                members=tree[top],
            )
    return found


@dataclass(frozen=True)
class Invocation:
    """What one invocation's span is made of."""

    invocation_id: str
    parent_id: str | None
    task: str
    status: str
    retry_count: int | None
    workflow_id: str | None
    history: list[tuple[float | None, str, object]]  # (time, status, history_json) in order
    exception: object  # exception_data, failed invocations only


def invocations(conn: sqlite3.Connection, app: AppTables, chunk: Sequence[tuple[str, str | None]]) -> list[Invocation]:
    """The invocations of one piece of a tree (``chunk``: (id, parent id)), in the given order."""
    ids = [i for i, _ in chunk]
    marks = ", ".join("?" * len(ids))
    workflow = "workflow_id" if app.has(SB_INVOCATIONS, "workflow_id") else "NULL"
    details = {
        str(r[0]): (r[1], r[2])
        for r in conn.execute(
            f"SELECT invocation_id, task_id_key, {workflow} FROM {app.q(SB_INVOCATIONS)}"
            f" WHERE invocation_id IN ({marks})",
            ids,
        )
    }
    retries: dict[str, object] = {}
    if app.has(INVOCATIONS, "retry_count"):
        retries = {
            str(r[0]): r[1]
            for r in conn.execute(
                f"SELECT invocation_id, retry_count FROM {app.q(INVOCATIONS)} WHERE invocation_id IN ({marks})", ids
            )
        }
    json_column = "history_json" if app.has(HISTORY, "history_json") else "NULL"
    history: dict[str, list[tuple[float | None, str, object]]] = {i: [] for i in ids}
    for invocation_id, at, status, data in conn.execute(
        f"SELECT invocation_id, history_timestamp, history_status, {json_column} FROM {app.q(HISTORY)}"
        f" WHERE invocation_id IN ({marks}) ORDER BY invocation_id, history_timestamp, rowid",
        ids,
    ):
        history[str(invocation_id)].append((epoch(at), str(status), data))
    current = statuses(conn, app, ids)
    failed = [i for i in ids if current.get(i) == "failed"]
    exceptions: dict[str, object] = {}
    if failed and app.has(EXCEPTIONS):
        exceptions = {
            str(r[0]): r[1]
            for r in conn.execute(
                f"SELECT invocation_id, exception_data FROM {app.q(EXCEPTIONS)}"
                f" WHERE invocation_id IN ({', '.join('?' * len(failed))})",
                failed,
            )
        }
    found = []
    for invocation_id, parent in chunk:
        task, workflow_id = details.get(invocation_id, (None, None))
        retry = retries.get(invocation_id)
        found.append(
            Invocation(
                invocation_id=invocation_id,
                parent_id=parent,
                task=task if isinstance(task, str) and task else "unknown",
                status=current.get(invocation_id, "unknown"),
                retry_count=retry if isinstance(retry, int) and not isinstance(retry, bool) else None,
                workflow_id=workflow_id if isinstance(workflow_id, str) and workflow_id else None,
                history=history[invocation_id],
                exception=exceptions.get(invocation_id),
            )
        )
    return found
