"""Counters and histograms of finished runs and steps, fed by a rowid watermark.

Whole-table counts go down when cleanup deletes rows; these never do.  Each refresh reads only
rows after the last rowid seen plus the few rows that were still running, so the cost follows
the write rate, not the DB size.  The first pass after start walks the existing rows in batches
(each its own short read transaction) to seed the counters; durations are observed only for rows
that finished within ``duration_window`` of the start, so histograms describe recent behaviour.

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

BATCH = 20_000
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

    def update(self, conn: sqlite3.Connection, schema: Schema, now: datetime) -> bool:
        """Consume one batch of new rows; True when caught up.  Call inside one read transaction."""
        if self._started is None:
            self._started = now
        caught_up = True
        if schema.supports(Capability.RUNS):
            caught_up &= self._update_runs(conn, schema)
        if schema.supports(Capability.STEPS):
            caught_up &= self._update_steps(conn, schema)
        if caught_up:
            self._seeded = True
        return caught_up

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
            rowids = list(self._running)
            current = {row.rowid: row for row in run_queries.runs_by_rowid(conn, schema, rowids)}
            for rowid in rowids:
                row = current.get(rowid)
                if row is None or row.run_id != self._running[rowid]:
                    del self._running[rowid]  # deleted (or its rowid was reused: picked up as new)
                elif row.status != "running":
                    del self._running[rowid]
                    self._count_run(row, recent=True)
        batch = run_queries.runs_after(conn, schema, self._run_rowid, BATCH)
        for row in batch:
            self._run_rowid = row.rowid
            if row.status == "running":
                self._running[row.rowid] = row.run_id
            else:
                self._count_run(row, recent=self._seeded)
        return len(batch) < BATCH

    def _count_run(self, row: run_queries.RunRow, *, recent: bool) -> None:
        pipeline = self._pipelines.label(row.pipeline)
        self._runs[(pipeline, row.status)] += 1
        if row.duration_s is not None and (recent or self._within_window(row.ended_at)):
            self._run_hist.setdefault(pipeline, Histogram(DURATION_BUCKETS)).observe(row.duration_s)

    def _within_window(self, ended_at: datetime | None) -> bool:
        return ended_at is not None and self._started is not None and self._started - ended_at <= self._window

    def _update_steps(self, conn: sqlite3.Connection, schema: Schema) -> bool:
        batch = run_queries.steps_after(conn, schema, self._step_rowid, BATCH)
        for step in batch:
            self._step_rowid = step.rowid
            name = self._steps.label(step.step_name)
            self._steps_count[(name, step.status)] += 1
            if step.duration_s is not None and (self._seeded or self._within_window(step.ended_at)):
                self._step_hist.setdefault(name, Histogram(STEP_DURATION_BUCKETS)).observe(step.duration_s)
        return len(batch) < BATCH
