"""Counters and histograms of finished runs and steps, fed by a rowid watermark.

Whole-table counts go down when cleanup deletes rows; these never do.  At start the counters are
seeded with one GROUP BY per table and the histograms with the rows inside ``duration_window``;
afterwards each refresh reads only the rows after the last rowid seen, plus the runs that left the
"running" state (found through the status index alone), so the cost follows the write rate, not
the DB size.

Limits (documented in the README): a run counts once, at its first finish (flujo rewrites a
resumed run's status in place); SQLite may reuse the highest rowid after that row is deleted, in
which case the new row is missed.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from exporter.labels import LabelCap
from exporter.reader import Capability, Schema
from exporter.reader import runs as run_queries
from exporter.reader.badvalues import BadValue

BATCH = 5_000
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
STEP_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


@dataclass
class Histogram:
    """Cumulative bucket counts in the shape prometheus_client's HistogramMetricFamily wants."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.total += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(cumulative)))
        return out

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total)


@dataclass(frozen=True)
class FinishedTotals:
    runs: Counter[tuple[str, str]]  # (pipeline, status)
    run_durations: dict[str, Histogram]  # pipeline
    steps: Counter[tuple[str, str]]  # (step, status)
    step_durations: dict[str, Histogram]  # step
    seeded: bool  # False until the first full pass finished


EMPTY_TOTALS = FinishedTotals(Counter(), {}, Counter(), {}, False)


class FinishTracker:
    """Not thread-safe: driven by the single refresh thread; readers get immutable copies."""

    def __init__(self, *, max_pipelines: int, max_steps: int, duration_window: timedelta) -> None:
        self._pipelines = LabelCap(max_pipelines)
        self._steps = LabelCap(max_steps)
        self._window = duration_window
        self._run_rowid = 0
        self._step_rowid = 0
        self._running: dict[int, str] = {}  # rowid -> run_id, for rows seen while unfinished
        self._runs: Counter[tuple[str, str]] = Counter()
        self._run_hist: dict[str, Histogram] = {}
        self._steps_count: Counter[tuple[str, str]] = Counter()
        self._step_hist: dict[str, Histogram] = {}
        self._seeded = False
        self._started: datetime | None = None
        self._follow_new_file = False

    def restarted(self) -> FinishTracker:
        """After another file took the DB path: keep every total, re-read the watermarks from the new
        file at the next update without counting the rows it holds already."""
        self._follow_new_file = True
        return self

    def take_bad_values(self) -> tuple[BadValue, ...]:
        """Values the last updates could not interpret (returned once)."""
        return ()

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
            caught_up &= self._update_runs(conn, schema)
        if schema.supports(Capability.STEPS):
            caught_up &= self._update_steps(conn, schema)
        return caught_up

    def _seed(self, conn: sqlite3.Connection, schema: Schema) -> None:
        """Counters from one GROUP BY per table; histograms from the rows inside the window only."""
        if schema.supports(Capability.RUNS):
            self._run_rowid = run_queries.max_rowid(conn, "runs")
            for pipeline, status, n in run_queries.finished_counts(conn, self._run_rowid):
                self._runs[(self._pipelines.label(pipeline), status)] += n
            self._running = dict(run_queries.running_rowids(conn))
            for row in run_queries.runs_started_since(conn, schema, self._window_start(), self._run_rowid):
                if row.status != "running" and row.duration_s is not None and self._within_window(row.ended_at):
                    self._observe_run(self._pipelines.label(row.pipeline), row.duration_s)
        if schema.supports(Capability.STEPS):
            self._step_rowid = run_queries.max_rowid(conn, "steps")
            for name, status, n in run_queries.step_counts(conn, self._step_rowid):
                self._steps_count[(self._steps.label(name), status)] += n
            for step in run_queries.recent_steps(conn, schema, self._step_rowid, self._window_start()):
                if step.duration_s is not None:
                    self._observe_step(self._steps.label(step.step_name), step.duration_s)

    def _skip_to_end(self, conn: sqlite3.Connection, schema: Schema) -> None:
        self._running = {}
        self._run_rowid = self._step_rowid = 0
        if schema.supports(Capability.RUNS):
            self._run_rowid = run_queries.max_rowid(conn, "runs")
            self._running = dict(run_queries.running_rowids(conn))
        if schema.supports(Capability.STEPS):
            self._step_rowid = run_queries.max_rowid(conn, "steps")

    def _window_start(self) -> datetime:
        assert self._started is not None
        return self._started - self._window

    @property
    def seeded(self) -> bool:
        return self._seeded

    def totals(self) -> FinishedTotals:
        return FinishedTotals(
            Counter(self._runs),
            {k: h.copy() for k, h in self._run_hist.items()},
            Counter(self._steps_count),
            {k: h.copy() for k, h in self._step_hist.items()},
            self._seeded,
        )

    def _update_runs(self, conn: sqlite3.Connection, schema: Schema) -> bool:
        if self._running:
            still = {rowid for rowid, _ in run_queries.running_rowids(conn)}
            left = [rowid for rowid in self._running if rowid not in still]
            current = {row.rowid: row for row in run_queries.runs_by_rowid(conn, schema, left)}
            for rowid in left:
                row = current.get(rowid)
                run_id = self._running.pop(rowid)
                if row is not None and row.run_id == run_id:
                    self._count_run(row)
                # else deleted, or its rowid was reused (the new row is read as new below)
        batch = run_queries.runs_after(conn, schema, self._run_rowid, BATCH)
        for row in batch:
            self._run_rowid = row.rowid
            if row.status == "running":
                self._running[row.rowid] = row.run_id
            else:
                self._count_run(row)
        return len(batch) < BATCH

    def _count_run(self, row: run_queries.RunRow) -> None:
        pipeline = self._pipelines.label(row.pipeline)
        self._runs[(pipeline, row.status)] += 1
        if row.duration_s is not None:
            self._observe_run(pipeline, row.duration_s)

    def _observe_run(self, pipeline: str, seconds: float) -> None:
        self._run_hist.setdefault(pipeline, Histogram(DURATION_BUCKETS)).observe(seconds)

    def _observe_step(self, step: str, seconds: float) -> None:
        self._step_hist.setdefault(step, Histogram(STEP_DURATION_BUCKETS)).observe(seconds)

    def _within_window(self, ended_at: datetime | None) -> bool:
        return ended_at is not None and self._started is not None and self._started - ended_at <= self._window

    def _update_steps(self, conn: sqlite3.Connection, schema: Schema) -> bool:
        batch = run_queries.steps_after(conn, schema, self._step_rowid, BATCH)
        for step in batch:
            self._step_rowid = step.rowid
            name = self._steps.label(step.step_name)
            self._steps_count[(name, step.status)] += 1
            if step.duration_s is not None:
                self._observe_step(name, step.duration_s)
        return len(batch) < BATCH
