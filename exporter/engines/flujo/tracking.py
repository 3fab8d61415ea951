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

On Postgres there is no rowid, and no key that grows with inserts in commit order (a ``SERIAL`` id
is taken at insert, but transactions commit in any order), so the same counts come from what
Postgres has:

* runs are keyed by ``run_id`` (the primary key).  New runs are found through the ``created_at``
  index, re-reading a window of :data:`REREAD_WINDOW` below the newest ``created_at`` seen and
  skipping the run ids already seen in it: a run committed late, or by a writer whose clock is a
  little behind, is still found; later than that it is missed (documented);
* flujo's Postgres upsert updates a state row in place, so no new rowid tells that a paused run's
  state was saved: the held runs (``runs`` final, ``workflow_state`` active) are re-checked by
  primary-key probes every refresh;
* steps are followed by their ``SERIAL`` id; the ids skipped below the highest one read (a
  transaction still open, or one rolled back) are remembered and probed by primary key every
  refresh for :data:`REREAD_WINDOW`: a step that commits after a higher id was read is still
  counted, once, and a refresh reads only new rows and those few ids.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from exporter.engines.flujo import runs as run_queries
from exporter.engines.flujo.dialect import RowKey
from exporter.engines.flujo.layout import Capability, Schema
from exporter.engines.flujo.statuses import ACTIVE_STATUSES, FINISHED_STATUSES, STEP_STATUSES
from exporter.labels import LabelCap
from exporter.model import RUN_DURATION_BUCKETS, Histogram
from exporter.reader.badvalues import BadValue
from exporter.reader.sql import Connection

log = logging.getLogger(__name__)

BATCH = 5_000
FULL_RECHECK_EVERY = 20  # refreshes between re-checks of every paused run (catches in-place UPDATEs)
# Postgres: how far below the newest runs.created_at (and the highest steps id) every refresh looks
# again, for rows committed after newer ones were read.
REREAD_WINDOW = timedelta(minutes=15)
STEP_GAP_SCAN = 10_000  # at the seed: how far below the highest step id missing ids are looked for
MAX_STEP_GAPS = 100_000  # missing step ids remembered at most (the oldest are dropped first)
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
        self._pending: dict[RowKey, _Pending] = {}  # key -> run not ended when last seen
        self._recent_runs = _CreatedWindow()  # Postgres: runs seen in the re-read window
        self._step_gaps: dict[int, datetime] = {}  # Postgres: step ids missing below the watermark -> since
        self._now: datetime | None = None
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

    def update(self, conn: Connection, schema: Schema, now: datetime) -> bool:
        """Consume one batch of new rows; True when caught up.  Call inside one read transaction."""
        self._now = now
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
        by_rowid = schema.dialect.has_rowid
        if schema.supports(Capability.RUNS):
            if by_rowid:
                self._rewind_runs_if_replaced(conn, schema)
            caught_up &= self._update_runs(conn, schema)
        if schema.supports(Capability.STEPS):
            if by_rowid:
                self._rewind_steps_if_replaced(conn)
                caught_up &= self._update_steps(conn, schema)
            else:
                caught_up &= self._update_steps_by_id(conn, schema, now)
        return caught_up

    def _skip_to_end(self, conn: Connection, schema: Schema) -> None:
        """Watermarks at the end of a file that took the DB path; the runs it holds already are not
        counted, those not ended yet are followed."""
        self._pending = {}
        self._run_rowid = self._step_rowid = self._workflow_rowid = 0
        if schema.supports(Capability.RUNS):
            self._follow_pending(conn, schema, self._runs_mark(conn, schema))
        if schema.supports(Capability.STEPS):
            self._step_rowid = self._steps_mark(conn, schema)

    def _runs_mark(self, conn: Connection, schema: Schema) -> int | None:
        """Where new runs start: the rowid watermarks on SQLite (returned: the seed's bound), the
        created_at window on Postgres (None: the seed's own transaction is the bound)."""
        if schema.dialect.has_rowid:
            self._run_rowid = run_queries.max_rowid(conn, "runs")
            self._workflow_rowid = run_queries.max_rowid(conn, "workflow_state")
            return self._run_rowid
        self._recent_runs = _CreatedWindow()
        self._recent_runs.start(conn)
        return None

    def _steps_mark(self, conn: Connection, schema: Schema) -> int:
        if schema.dialect.has_rowid:
            return run_queries.max_rowid(conn, "steps")
        top = run_queries.max_step_id(conn)
        low = max(top - STEP_GAP_SCAN, 0)
        present = set(run_queries.step_ids_between(conn, low, top))
        since = self._now or datetime.now(UTC)
        self._step_gaps = {key: since for key in range(low + 1, top + 1) if key not in present}
        return top

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
    def _seed(self, conn: Connection, schema: Schema) -> None:
        """Counters from one GROUP BY per table; histograms from the rows inside the window only."""
        if schema.supports(Capability.RUNS):
            bound = self._runs_mark(conn, schema)
            for group in run_queries.finished_counts(conn, schema, bound):
                self._bad.extend(group.bad)
                if group.label is not None and group.status is not None:
                    key = (self._pipelines.label(group.label), self._run_statuses.label(group.status))
                    self._runs[key] += group.n
            self._follow_pending(conn, schema, bound)
            for row in run_queries.runs_started_since(conn, schema, self._window_start(), bound):
                ended = row.valid and row.final_status is not None and self._within_window(row.ended_at)
                if ended and row.duration_s is not None:
                    self._observe_run(self._pipelines.label(row.pipeline or ""), row.duration_s)
        if schema.supports(Capability.STEPS):
            self._step_rowid = self._steps_mark(conn, schema)
            for group in run_queries.step_counts(conn, schema, self._step_rowid):
                self._bad.extend(group.bad)
                if group.label is not None and group.status is not None:
                    key = (self._steps.label(group.label), self._step_statuses.label(group.status))
                    self._steps_count[key] += group.n
            for step in run_queries.recent_steps(conn, schema, self._step_rowid, self._window_start()):
                if step.valid and step.duration_s is not None:
                    self._observe_step(self._steps.label(step.step_name or ""), step.duration_s)

    def _follow_pending(self, conn: Connection, schema: Schema, up_to_rowid: int | None) -> None:
        for run in run_queries.pending_runs(conn, schema, up_to_rowid):
            known = self._pending.get(run.key)
            if known is None or known.run_id != run.run_id:
                self._pending[run.key] = _Pending(run.run_id, run.fingerprint)

    def _window_start(self) -> datetime:
        assert self._started is not None
        return self._started - self._window

    # --- a replaced file ---------------------------------------------------------------------------
    def _rewind_runs_if_replaced(self, conn: Connection, schema: Schema) -> None:
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
        self._pending = {rowid: entry for rowid, entry in self._pending.items() if int(rowid) <= top}
        self._follow_pending(conn, schema, top)

    def _rewind_steps_if_replaced(self, conn: Connection) -> None:
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
    def _update_runs(self, conn: Connection, schema: Schema) -> bool:
        self._refreshes += 1
        sweep = self._refreshes % FULL_RECHECK_EVERY == 0
        saved: set[str] | None = None
        if schema.dialect.has_rowid:
            top = run_queries.max_rowid(conn, "workflow_state")
            if top < self._workflow_rowid:
                self._workflow_rowid, sweep = top, True  # replaced or rewritten: re-check every pending run once
            self._workflow_rowid, saved = run_queries.workflow_saves_after(conn, self._workflow_rowid)
        elif self._pending:
            # Postgres updates rows in place (no new rowid to follow): a run held back by its
            # workflow_state has ended only if that row left running/paused (or was deleted) or its
            # runs row left 'completed' (a resumed run that fails); only those are read again.
            holding = run_queries.still_held(conn, [e.run_id for e in self._pending.values() if e.fingerprint])
            saved = {entry.run_id for entry in self._pending.values() if entry.run_id not in holding}
        if self._pending:
            # Rows still running in ``runs`` cost nothing beyond the status index.  A paused run is
            # re-read (by key, with its workflow_state status) once its state is saved again, and
            # every FULL_RECHECK_EVERY refreshes in case something UPDATEd it in place.
            for entry in self._pending.values():
                if saved is None or entry.run_id in saved:
                    entry.hot = True
            active = run_queries.active_keys(conn, schema)
            recheck = [
                key for key, entry in self._pending.items() if key not in active and (sweep or entry.needs_check)
            ]
            states = run_queries.run_states(conn, schema, recheck)
            changed = [key for key in recheck if self._changed(key, states.get(key))]
            current = {row.key: row for row in run_queries.runs_by_key(conn, schema, changed)}
            for key in changed:
                self._settle(key, current.get(key), states.get(key))
        if schema.dialect.has_rowid:
            batch = run_queries.runs_after(conn, schema, self._run_rowid, BATCH)
            caught_up = len(batch) < BATCH
        else:
            batch = run_queries.runs_by_key(conn, schema, self._recent_runs.take_new(conn))
            caught_up = True
        for row in batch:
            if isinstance(row.key, int):
                self._run_rowid = row.key
            if not row.valid:
                self._bad.extend(row.bad)
                continue
            status = row.final_status
            if status is None:
                held = row.fingerprint if row.status not in ACTIVE_STATUSES else None
                self._pending[row.key] = _Pending(row.run_id, held)
            else:
                self._count_run(row, status)
        return caught_up

    def _changed(self, rowid: RowKey, state: run_queries.RunState | None) -> bool:
        entry = self._pending[rowid]
        return state is None or state != entry.state or entry.waited

    def _settle(self, rowid: RowKey, row: run_queries.RunRow | None, state: run_queries.RunState | None) -> None:
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

    def _update_steps(self, conn: Connection, schema: Schema) -> bool:
        batch = run_queries.steps_after(conn, schema, self._step_rowid, BATCH)
        for step in batch:
            self._step_rowid = step.key
            self._count_step(step)
        return len(batch) < BATCH

    def _update_steps_by_id(self, conn: Connection, schema: Schema, now: datetime) -> bool:
        """Postgres: the steps committed since the last refresh whose ids were skipped (probed by
        primary key), then the steps above the highest id read."""
        if self._step_gaps:
            for step in run_queries.steps_by_id(conn, schema, sorted(self._step_gaps)):
                del self._step_gaps[step.key]
                self._count_step(step)
            expired = now - REREAD_WINDOW  # never committed by now: rolled back (or deleted)
            self._step_gaps = {key: since for key, since in self._step_gaps.items() if since >= expired}
        batch = run_queries.steps_after(conn, schema, self._step_rowid, BATCH)
        for step in batch:
            # ids between the last one read and this one: transactions still open, or rolled back
            for missing in range(max(self._step_rowid + 1, step.key - MAX_STEP_GAPS), step.key):
                self._step_gaps[missing] = now
            self._step_rowid = step.key
            self._count_step(step)
        if len(self._step_gaps) > MAX_STEP_GAPS:
            self._step_gaps = dict(sorted(self._step_gaps.items())[-MAX_STEP_GAPS:])
        return len(batch) < BATCH

    def _count_step(self, step: run_queries.StepRow) -> None:
        self._bad.extend(step.bad)
        if step.step_name is None or step.status is None:
            return
        name = self._steps.label(step.step_name)
        self._steps_count[(name, self._step_statuses.label(step.status))] += 1
        if step.duration_s is not None:
            self._observe_step(name, step.duration_s)


class _CreatedWindow:
    """Postgres: the runs seen whose ``created_at`` lies within :data:`REREAD_WINDOW` of the newest
    one seen, so that re-reading that window each refresh yields every run exactly once."""

    def __init__(self) -> None:
        self._newest: datetime | None = None
        self._seen: dict[str, datetime] = {}

    def start(self, conn: Connection) -> None:
        """At the seed, whose own counts hold every run present: only the window's runs are
        remembered (not the whole table)."""
        self._newest, self._seen = run_queries.newest_run_created(conn), {}
        self.take_new(conn)

    def take_new(self, conn: Connection) -> list[RowKey]:
        """The run ids in the window not seen before (now seen); every run on the first call."""
        floor = None if self._newest is None else self._newest - REREAD_WINDOW
        fresh: list[RowKey] = []
        for run_id, created in run_queries.runs_created_since(conn, floor):
            if run_id in self._seen:
                continue
            self._seen[run_id] = created
            fresh.append(run_id)
            if self._newest is None or created > self._newest:
                self._newest = created
        if self._newest is not None:
            floor = self._newest - REREAD_WINDOW
            self._seen = {run_id: created for run_id, created in self._seen.items() if created >= floor}
        return fresh
