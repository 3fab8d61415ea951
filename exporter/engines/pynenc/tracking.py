"""Invocations seen finishing, from a rowid cursor over each app's append-only history.

pynenc appends one ``state_backend_history`` row per status transition and never updates one, so
a rowid watermark finds every new transition once: final statuses feed the finished counters and
the duration histograms, ``retry`` rows the retry counter.  At start the cursor walks the rows
present (in batches) and counts them all; the histograms take only the invocations that finished
within ``metrics.run_duration_window`` before the start, like Flujo's tracker.

Durations come from the history (``history_timestamp``, epoch seconds):
queue wait = first ``running`` minus first ``registered``; run = the final row minus first ``running``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from exporter.engines.pynenc.layout import EXCEPTIONS, HISTORY, INVOCATIONS, SB_INVOCATIONS, AppTables, Schema
from exporter.engines.pynenc.statuses import (
    FAILED,
    FINAL_STATUSES,
    FOLLOWED_STATUSES,
    REGISTERED,
    RETRY,
    RUNNING,
    sql_list,
)
from exporter.engines.pynenc.values import UNKNOWN, app_config, epoch
from exporter.labels import LabelCap, label_text
from exporter.model import RUN_DURATION_BUCKETS, Histogram
from exporter.reader.badvalues import BadValue, shown

log = logging.getLogger(__name__)

BATCH = 500
# Tasks are often milliseconds long: finer low buckets than the runs' (which the overview sums).
TASK_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, *RUN_DURATION_BUCKETS)

AppTask = tuple[str, str]


@dataclass(frozen=True)
class FinishedTotals:
    invocations: Counter[tuple[str, str, str]]  # (app, task, final status)
    runs: Counter[tuple[str, str]]  # (app, final status): top-level invocations only
    retries: Counter[AppTask]
    failures: Counter[tuple[str, str, str]]  # (app, task, exception class)
    run_durations: dict[AppTask, Histogram]
    queue_waits: dict[AppTask, Histogram]
    top_level_durations: dict[str, Histogram]  # app -> run durations of top-level invocations
    seeded: bool


EMPTY_TOTALS = FinishedTotals(Counter(), Counter(), Counter(), Counter(), {}, {}, {}, False)


@dataclass(frozen=True)
class _Detail:
    task: str | None  # None: a task name that cannot be a label
    top_level: bool
    first_registered: float | None
    first_running: float | None


class FinishTracker:
    def __init__(self, *, max_tasks: int, max_errors: int, duration_window: timedelta) -> None:
        self._max_tasks = max_tasks
        self._max_errors = max_errors
        self._window = duration_window
        self._tasks: dict[str, LabelCap] = {}
        self._errors: dict[str, LabelCap] = {}
        self._cursors: dict[str, int] = {}  # app prefix -> last history rowid consumed
        self._seeding: set[str] = set()  # prefixes whose rows present at start are still being read
        self._invocations: Counter[tuple[str, str, str]] = Counter()
        self._runs: Counter[tuple[str, str]] = Counter()
        self._retries: Counter[AppTask] = Counter()
        self._failures: Counter[tuple[str, str, str]] = Counter()
        self._run_hist: dict[AppTask, Histogram] = {}
        self._queue_hist: dict[AppTask, Histogram] = {}
        self._top_hist: dict[str, Histogram] = {}
        self._bad: list[BadValue] = []
        self._seeded = False
        self._started: datetime | None = None
        self._follow_new_file = False

    def restarted(self) -> FinishTracker:
        """Another file took the DB path: keep every total, start each cursor at the end of the new
        file's history without counting what it holds already."""
        self._follow_new_file = True
        return self

    @property
    def seeded(self) -> bool:
        return self._seeded

    def take_bad_values(self) -> tuple[BadValue, ...]:
        found, self._bad = tuple(self._bad), []
        return found

    def totals(self) -> FinishedTotals:
        return FinishedTotals(
            Counter(self._invocations),
            Counter(self._runs),
            Counter(self._retries),
            Counter(self._failures),
            {k: h.copy() for k, h in self._run_hist.items()},
            {k: h.copy() for k, h in self._queue_hist.items()},
            {k: h.copy() for k, h in self._top_hist.items()},
            self._seeded,
        )

    def update(self, conn: sqlite3.Connection, schema: Schema, now: datetime) -> bool:
        """Consume one batch per app; ``True`` once every app is caught up.  One read transaction."""
        if self._started is None:
            self._started = now
        apps = [app for app in schema.apps if app.has(HISTORY)]
        if self._follow_new_file:
            self._follow_new_file = False
            self._cursors = {app.prefix: _max_rowid(conn, app) for app in apps}
            self._seeding = set()
            return True
        caught_up = True
        for app in apps:
            if app.prefix not in self._cursors:
                self._cursors[app.prefix] = 0
                self._seeding.add(app.prefix)
            done = self._follow(conn, app)
            if done:
                self._seeding.discard(app.prefix)
            caught_up &= done
        if caught_up:
            self._seeded = True
        return caught_up

    def _follow(self, conn: sqlite3.Connection, app: AppTables) -> bool:
        top = _max_rowid(conn, app)
        cursor = self._cursors[app.prefix]
        if top < cursor:
            log.warning(
                "%s: MAX(rowid) %d is below the cursor %d: the DB file was replaced or its newest history "
                "deleted; following it from rowid %d on",
                app.name(HISTORY),
                top,
                cursor,
                top,
            )
            self._cursors[app.prefix] = top
            return True
        rows = conn.execute(
            f"SELECT rowid, invocation_id, history_status, history_timestamp FROM {app.q(HISTORY)} "
            f"WHERE rowid > ? AND rowid <= ? AND history_status IN {sql_list(FOLLOWED_STATUSES)} "
            "ORDER BY rowid LIMIT ?",
            (cursor, top, BATCH),
        ).fetchall()
        if rows:
            label = app_config(conn, app).label
            details = _details(conn, app, {row[1] for row in rows}, self._bad)
            finals = [row for row in rows if row[2] in FINAL_STATUSES]
            errors = _errors(conn, app, {row[1] for row in finals if row[2] == FAILED}, self._bad)
            for _rowid, invocation_id, status, finished in rows:
                self._count(app, label, invocation_id, status, finished, details.get(invocation_id), errors)
        complete = len(rows) < BATCH
        self._cursors[app.prefix] = top if complete else rows[-1][0]
        return complete

    def _count(
        self,
        app: AppTables,
        label: str,
        invocation_id: str,
        status: str,
        finished_raw: object,
        detail: _Detail | None,
        errors: dict[str, str],
    ) -> None:
        detail = detail or _Detail(UNKNOWN, True, None, None)
        if detail.task is None:
            return  # reported as a bad value by _details
        task = self._tasks.setdefault(label, LabelCap(self._max_tasks)).label(detail.task)
        if status == RETRY:
            self._retries[(label, task)] += 1
            return
        self._invocations[(label, task, status)] += 1
        if detail.top_level:
            self._runs[(label, status)] += 1
        if status == FAILED:
            error = self._errors.setdefault(label, LabelCap(self._max_errors)).label(errors.get(invocation_id, UNKNOWN))
            self._failures[(label, task, error)] += 1
        finished = epoch(finished_raw)
        if finished is None:
            self._bad.append(BadValue(app.name(HISTORY), "history_timestamp", invocation_id, shown(finished_raw)))
            return
        if app.prefix in self._seeding and not self._within_window(finished):
            return
        started = detail.first_running
        if started is not None and finished >= started:
            self._run_hist.setdefault((label, task), Histogram(TASK_DURATION_BUCKETS)).observe(finished - started)
            if detail.top_level:
                self._top_hist.setdefault(label, Histogram(RUN_DURATION_BUCKETS)).observe(finished - started)
        registered = detail.first_registered
        if started is not None and registered is not None and started >= registered:
            self._queue_hist.setdefault((label, task), Histogram(TASK_DURATION_BUCKETS)).observe(started - registered)

    def _within_window(self, finished: float) -> bool:
        assert self._started is not None
        return finished >= (self._started - self._window).timestamp()


def _max_rowid(conn: sqlite3.Connection, app: AppTables) -> int:
    return int(conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {app.q(HISTORY)}").fetchone()[0])


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


def _details(
    conn: sqlite3.Connection, app: AppTables, invocation_ids: set[str], bad: list[BadValue]
) -> dict[str, _Detail]:
    """Task, parent and first registered / running times of each invocation (the history's primary
    key starts with ``invocation_id``: one index probe each)."""
    ids = sorted(i for i in invocation_ids if isinstance(i, str))
    if not ids:
        return {}
    marks = _placeholders(len(ids))
    tasks: dict[str, tuple[object, bool]] = {}
    if app.has(SB_INVOCATIONS):
        sql = (
            f"SELECT invocation_id, task_id_key, parent_invocation_id IS NULL FROM {app.q(SB_INVOCATIONS)} "
            f"WHERE invocation_id IN ({marks})"
        )
        tasks = {row[0]: (row[1], bool(row[2])) for row in conn.execute(sql, ids)}
    if app.has(INVOCATIONS):
        missing = [i for i in ids if i not in tasks]
        if missing:
            sql = (
                f"SELECT invocation_id, task_id_key FROM {app.q(INVOCATIONS)} "
                f"WHERE invocation_id IN ({_placeholders(len(missing))})"
            )
            tasks.update({row[0]: (row[1], True) for row in conn.execute(sql, missing)})
    numeric = "typeof(history_timestamp) IN ('real', 'integer')"
    times = {
        row[0]: (row[1], row[2])
        for row in conn.execute(
            f"SELECT invocation_id, "
            f"MIN(CASE WHEN history_status = '{REGISTERED}' AND {numeric} THEN history_timestamp END), "
            f"MIN(CASE WHEN history_status = '{RUNNING}' AND {numeric} THEN history_timestamp END) "
            f"FROM {app.q(HISTORY)} WHERE invocation_id IN ({marks}) GROUP BY invocation_id",
            ids,
        )
    }
    details = {}
    for invocation_id in ids:
        raw_task, top_level = tasks.get(invocation_id, (UNKNOWN, True))
        task = label_text(raw_task)
        if task is None:
            table = app.name(SB_INVOCATIONS if app.has(SB_INVOCATIONS) else INVOCATIONS)
            bad.append(BadValue(table, "task_id_key", invocation_id, shown(raw_task)))
        registered, running = times.get(invocation_id, (None, None))
        details[invocation_id] = _Detail(task, top_level, epoch(registered), epoch(running))
    return details


def _errors(conn: sqlite3.Connection, app: AppTables, invocation_ids: set[str], bad: list[BadValue]) -> dict[str, str]:
    """The exception class name (``exception_data.error_name``) of each failed invocation."""
    ids = sorted(i for i in invocation_ids if isinstance(i, str))
    if not ids or not app.has(EXCEPTIONS):
        return {}
    found = {}
    sql = (
        f"SELECT invocation_id, exception_data FROM {app.q(EXCEPTIONS)} "
        f"WHERE invocation_id IN ({_placeholders(len(ids))})"
    )
    for invocation_id, data in conn.execute(sql, ids):
        name = None
        try:
            parsed = json.loads(data)
            name = label_text(parsed.get("error_name")) if isinstance(parsed, dict) else None
        except (TypeError, ValueError):
            pass
        if name is None:
            bad.append(BadValue(app.name(EXCEPTIONS), "exception_data", str(invocation_id), shown(data)))
            continue
        found[invocation_id] = name
    return found
