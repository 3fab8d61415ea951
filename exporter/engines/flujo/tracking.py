"""Counters and histograms of finished runs and steps, fed by a rowid watermark.

Whole-table counts go down when cleanup deletes rows; these never do.  At start the counters are
seeded with one GROUP BY per table and the histograms with the rows inside ``duration_window``;
afterwards each refresh reads only the rows after the last rowid seen, plus the runs not ended yet:
those running in ``runs`` through its status index; a paused one when its ``workflow_state`` row is
saved again (flujo's ``INSERT OR REPLACE`` gives it a new rowid, found by a second watermark), and all
of them every :data:`FULL_RECHECK_EVERY` refreshes.  The cost follows the write rate, not the DB size.

A run counts once, when it has really ended (:func:`exporter.engines.flujo.runs.final_status`): a run paused
for approval (``runs`` says completed, ``workflow_state`` paused) stays pending until it is resumed
and ends, and is then counted with its final status and duration.  A pending run whose
``workflow_state`` turned final while its ``runs`` row did not change yet (flujo writes the state
first, the run's end next) waits one more refresh for the new end time before it is counted.

If ``MAX(rowid)`` of a table falls below the watermark, the file was replaced or rewritten (or its
newest rows deleted): the watermark moves back to the file's ``MAX(rowid)`` and the runs not ended
in it are followed; rows already in the file are not added (no double count of a swapped-in copy)
and the counters keep their values (they never go down).

Limit (documented in the README): SQLite may reuse the highest rowid after that row is deleted,
in which case a new row is missed unless the deletion lowered ``MAX(rowid)`` below the watermark.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from exporter.engines.flujo import runs as run_queries
from exporter.engines.flujo.layout import Capability, Schema
from exporter.engines.flujo.statuses import ACTIVE_STATUSES, FINISHED_STATUSES, STEP_STATUSES
from exporter.labels import LabelCap
from exporter.model import RUN_DURATION_BUCKETS, Histogram
from exporter.reader.badvalues import BadValue

log = logging.getLogger(__name__)

BATCH = 5_000
FULL_RECHECK_EVERY = 20  # refreshes between re-checks of every paused run (catches in-place UPDATEs)
STEP_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
MAX_UNKNOWN_STATUSES = 20
KNOWN_RUN_STATUSES = frozenset(FINISHED_STATUSES)
KNOWN_STEP_STATUSES = frozenset(STEP_STATUSES)


@dataclass(frozen=True)
class FinishedTotals:
    runs: Counter[tuple[str, str]]  # (pipeline, status)
    run_durations: dict[str, Histogram]  # pipeline
    steps: Counter[tuple[str, str]]  # (step, status)
    step_durations: dict[str, Histogram]  # step
    seeded: bool  # False until the first full pass finished


EMPTY_TOTALS = FinishedTotals(Counter(), {}, Counter(), {}, False)


class StatusCap:
    """Known statuses always keep their label; at most ``limit`` unknown ones do, the rest are ``other``."""

    def __init__(self, known: frozenset[str], limit: int) -> None:
        self._known = known
        self._unknown = LabelCap(limit)

    def label(self, value: str) -> str:
        return value if value in self._known else self._unknown.label(value)


@dataclass
class _Pending:
    """A run seen but not ended.  ``fingerprint`` is runs' (status, end) when it was last seen held
    back by workflow_state (None while runs itself said running); ``waited`` is set once
    workflow_state said final while runs had not changed yet; ``state`` is what the deciding columns
    held at the last full read (an unchanged run is not read again)."""

    run_id: str
    fingerprint: tuple[object, object] | None
    waited: bool = False
    state: run_queries.RunState | None = None
    hot: bool = False  # its workflow_state was saved since it was held: re-checked every refresh

    @property
    def needs_check(self) -> bool:
        # fingerprint None: runs said running when last seen, and it has just left that state
        return self.fingerprint is None or self.hot or self.waited


class FinishTracker:
    """Not thread-safe: driven by the single refresh thread; readers get immutable copies."""

    def __init__(self, *, max_pipelines: int, max_steps: int, duration_window: timedelta) -> None:
        self._pipelines = LabelCap(max_pipelines)
        self._steps = LabelCap(max_steps)
        self._run_statuses = StatusCap(KNOWN_RUN_STATUSES, MAX_UNKNOWN_STATUSES)
        self._step_statuses = StatusCap(KNOWN_STEP_STATUSES, MAX_UNKNOWN_STATUSES)
        self._window = duration_window
        self._run_rowid = 0
        self._step_rowid = 0
        self._workflow_rowid = 0
        self._refreshes = 0
        self._pending: dict[int, _Pending] = {}  # rowid -> run not ended when last seen
        self._runs: Counter[tuple[str, str]] = Counter()
        self._run_hist: dict[str, Histogram] = {}
        self._steps_count: Counter[tuple[str, str]] = Counter()
        self._step_hist: dict[str, Histogram] = {}
        self._bad: list[BadValue] = []
        self._seeded = False
        self._started: datetime | None = None
        self._follow_new_file = False

    def restarted(self) -> FinishTracker:
        """After another file took the DB path: keep every total, re-read the watermarks from the new
        file at the next update without counting the rows it holds already."""
        self._follow_new_file = True
        return self

    def update(self, conn: sqlite3.Connection, schema: Schema, now: datetime) -> bool:
        """Consume one batch of new rows; True when caught up.  Call inside one read transaction."""
        if self._started is None:
            self._started = now
        if not self._seeded:
            self._seed(conn, schema)
            self._seeded = True
            return True
        if self._follow_new_file:
            self._follow_new_file = False
            self._skip_to_end(conn, schema)
            return True
        caught_up = True
        if schema.supports(Capability.RUNS):
            self._rewind_runs_if_replaced(conn, schema)
            caught_up &= self._update_runs(conn, schema)
        if schema.supports(Capability.STEPS):
            self._rewind_steps_if_replaced(conn)
            caught_up &= self._update_steps(conn, schema)
        return caught_up

    def _skip_to_end(self, conn: sqlite3.Connection, schema: Schema) -> None:
        """Watermarks at the end of a file that took the DB path; the runs it holds already are not
        counted, those not ended yet are followed."""
        self._pending = {}
        self._run_rowid = self._step_rowid = self._workflow_rowid = 0
        if schema.supports(Capability.RUNS):
            self._run_rowid = run_queries.max_rowid(conn, "runs")
            self._workflow_rowid = run_queries.max_rowid(conn, "workflow_state")
            self._follow_pending(conn, schema, self._run_rowid)
        if schema.supports(Capability.STEPS):
            self._step_rowid = run_queries.max_rowid(conn, "steps")

    def take_bad_values(self) -> tuple[BadValue, ...]:
        """The stored values the updates since the last call could not interpret (then forgotten)."""
        found, self._bad = tuple(self._bad), []
        return found

    @property
    def seeded(self) -> bool:
        return self._seeded

    @property
    def pending_runs(self) -> int:
        return len(self._pending)

    def totals(self) -> FinishedTotals:
        return FinishedTotals(
            Counter(self._runs),
            {k: h.copy() for k, h in self._run_hist.items()},
            Counter(self._steps_count),
            {k: h.copy() for k, h in self._step_hist.items()},
            self._seeded,
        )

    # --- seed ------------------------------------------------------------------------------------
    def _seed(self, conn: sqlite3.Connection, schema: Schema) -> None:
        """Counters from one GROUP BY per table; histograms from the rows inside the window only."""
        if schema.supports(Capability.RUNS):
            self._run_rowid = run_queries.max_rowid(conn, "runs")
            self._workflow_rowid = run_queries.max_rowid(conn, "workflow_state")
            for group in run_queries.finished_counts(conn, self._run_rowid):
                self._bad.extend(group.bad)
                if group.label is not None and group.status is not None:
                    key = (self._pipelines.label(group.label), self._run_statuses.label(group.status))
                    self._runs[key] += group.n
            self._follow_pending(conn, schema, self._run_rowid)
            for row in run_queries.runs_started_since(conn, schema, self._window_start(), self._run_rowid):
                ended = row.valid and row.final_status is not None and self._within_window(row.ended_at)
                if ended and row.duration_s is not None:
                    self._observe_run(self._pipelines.label(row.pipeline or ""), row.duration_s)
        if schema.supports(Capability.STEPS):
            self._step_rowid = run_queries.max_rowid(conn, "steps")
            for group in run_queries.step_counts(conn, self._step_rowid):
                self._bad.extend(group.bad)
                if group.label is not None and group.status is not None:
                    key = (self._steps.label(group.label), self._step_statuses.label(group.status))
                    self._steps_count[key] += group.n
            for step in run_queries.recent_steps(conn, schema, self._step_rowid, self._window_start()):
                if step.valid and step.duration_s is not None:
                    self._observe_step(self._steps.label(step.step_name or ""), step.duration_s)

    def _follow_pending(self, conn: sqlite3.Connection, schema: Schema, up_to_rowid: int) -> None:
        for run in run_queries.pending_runs(conn, schema, up_to_rowid):
            known = self._pending.get(run.rowid)
            if known is None or known.run_id != run.run_id:
                self._pending[run.rowid] = _Pending(run.run_id, run.fingerprint)

    def _window_start(self) -> datetime:
        assert self._started is not None
        return self._started - self._window

    # --- a replaced file ---------------------------------------------------------------------------
    def _rewind_runs_if_replaced(self, conn: sqlite3.Connection, schema: Schema) -> None:
        top = run_queries.max_rowid(conn, "runs")
        if top >= self._run_rowid:
            return
        log.warning(
            "runs: MAX(rowid) %d is below the watermark %d: the DB file was replaced or its newest runs "
            "deleted; following it from rowid %d on (runs already in it are not counted again)",
            top,
            self._run_rowid,
            top,
        )
        self._run_rowid = top
        self._pending = {rowid: entry for rowid, entry in self._pending.items() if rowid <= top}
        self._follow_pending(conn, schema, top)

    def _rewind_steps_if_replaced(self, conn: sqlite3.Connection) -> None:
        top = run_queries.max_rowid(conn, "steps")
        if top >= self._step_rowid:
            return
        log.warning(
            "steps: MAX(rowid) %d is below the watermark %d: the DB file was replaced or its newest steps "
            "deleted; following it from rowid %d on",
            top,
            self._step_rowid,
            top,
        )
        self._step_rowid = top

    # --- every refresh ------------------------------------------------------------------------------
    def _update_runs(self, conn: sqlite3.Connection, schema: Schema) -> bool:
        self._refreshes += 1
        sweep = self._refreshes % FULL_RECHECK_EVERY == 0
        top = run_queries.max_rowid(conn, "workflow_state")
        if top < self._workflow_rowid:
            self._workflow_rowid, sweep = top, True  # replaced or rewritten: re-check every pending run once
        self._workflow_rowid, saved = run_queries.workflow_saves_after(conn, self._workflow_rowid)
        if self._pending:
            # Rows still running in ``runs`` cost nothing beyond the status index.  A paused run is
            # re-read (by rowid, with its workflow_state status) once its state is saved again, and
            # every FULL_RECHECK_EVERY refreshes in case something UPDATEd it in place.
            for entry in self._pending.values():
                if entry.run_id in saved:
                    entry.hot = True
            active = run_queries.active_rowids(conn)
            recheck = [
                rowid for rowid, entry in self._pending.items() if rowid not in active and (sweep or entry.needs_check)
            ]
            states = run_queries.run_states(conn, schema, recheck)
            changed = [rowid for rowid in recheck if self._changed(rowid, states.get(rowid))]
            current = {row.rowid: row for row in run_queries.runs_by_rowid(conn, schema, changed)}
            for rowid in changed:
                self._settle(rowid, current.get(rowid), states.get(rowid))
        batch = run_queries.runs_after(conn, schema, self._run_rowid, BATCH)
        for row in batch:
            self._run_rowid = row.rowid
            if not row.valid:
                self._bad.extend(row.bad)
                continue
            status = row.final_status
            if status is None:
                held = row.fingerprint if row.status not in ACTIVE_STATUSES else None
                self._pending[row.rowid] = _Pending(row.run_id, held)
            else:
                self._count_run(row, status)
        return len(batch) < BATCH

    def _changed(self, rowid: int, state: run_queries.RunState | None) -> bool:
        entry = self._pending[rowid]
        return state is None or state != entry.state or entry.waited

    def _settle(self, rowid: int, row: run_queries.RunRow | None, state: run_queries.RunState | None) -> None:
        entry = self._pending[rowid]
        entry.state = state
        if row is None or row.run_id != entry.run_id:
            del self._pending[rowid]  # deleted, or its rowid was reused (the new row is read as new)
            return
        if not row.valid:
            del self._pending[rowid]
            self._bad.extend(row.bad)
            return
        status = row.final_status
        if status is None:
            entry.fingerprint, entry.waited = row.fingerprint, False
            return
        if entry.fingerprint == row.fingerprint and not entry.waited:
            # workflow_state says ended but runs still holds the pause's end: flujo writes the run's
            # end right after; wait one refresh for it (an admin cancel never writes it: counted then).
            entry.waited = True
            return
        del self._pending[rowid]
        self._count_run(row, status)

    def _count_run(self, row: run_queries.RunRow, status: str) -> None:
        self._bad.extend(row.bad)
        pipeline = self._pipelines.label(row.pipeline or "")
        self._runs[(pipeline, self._run_statuses.label(status))] += 1
        if row.duration_s is not None:
            self._observe_run(pipeline, row.duration_s)

    def _observe_run(self, pipeline: str, seconds: float) -> None:
        self._run_hist.setdefault(pipeline, Histogram(RUN_DURATION_BUCKETS)).observe(seconds)

    def _observe_step(self, step: str, seconds: float) -> None:
        self._step_hist.setdefault(step, Histogram(STEP_DURATION_BUCKETS)).observe(seconds)

    def _within_window(self, ended_at: datetime | None) -> bool:
        return ended_at is not None and self._started is not None and self._started - ended_at <= self._window

    def _update_steps(self, conn: sqlite3.Connection, schema: Schema) -> bool:
        batch = run_queries.steps_after(conn, schema, self._step_rowid, BATCH)
        for step in batch:
            self._step_rowid = step.rowid
            self._bad.extend(step.bad)
            if step.step_name is None or step.status is None:
                continue
            name = self._steps.label(step.step_name)
            self._steps_count[(name, self._step_statuses.label(step.status))] += 1
            if step.duration_s is not None:
                self._observe_step(name, step.duration_s)
        return len(batch) < BATCH
