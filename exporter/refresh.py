"""Keeps an immutable snapshot of the DB current; scrapes only read it.

One refresh at a time (single-flight): a refresh that is still running when the next one is due
makes that one a no-op.  Each phase records its own success, duration and last success; a failed
phase keeps the last good values, so scrapes go on serving them marked stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from exporter.clock import Clock
from exporter.config import MetricsConfig
from exporter.reader import (
    AggregateStats,
    CountStats,
    DatabaseUnavailable,
    FastStats,
    FlujoReader,
    Problem,
    Schema,
)
from exporter.reader.badvalues import BadValue
from exporter.stuck import StuckPolicy
from exporter.tracking import EMPTY_TOTALS, FinishedTotals, FinishTracker

log = logging.getLogger(__name__)

SNAPSHOT, COUNTS, WATERMARKS, AGGREGATES = "snapshot", "counts", "watermarks", "aggregates"
PHASES = (SNAPSHOT, COUNTS, WATERMARKS, AGGREGATES)
_BAD_VALUES_LOGGED = 5


@dataclass(frozen=True)
class PhaseHealth:
    success: bool = False
    duration_s: float = 0.0
    last_success: datetime | None = None


@dataclass(frozen=True)
class ExporterState:
    schema: Schema | None = None
    fast: FastStats | None = None
    counts: CountStats | None = None
    aggregates: AggregateStats | None = None
    finished: FinishedTotals = EMPTY_TOTALS
    db_bytes: int = 0
    wal_bytes: int = 0
    problem: DatabaseUnavailable | None = None
    phases: dict[str, PhaseHealth] = field(default_factory=lambda: {p: PhaseHealth() for p in PHASES})
    errors: Counter[str] = field(default_factory=Counter)  # by Problem
    bad_values: Counter[tuple[str, str]] = field(default_factory=Counter)  # by (table, column)


def release_free_memory() -> None:
    """Whole-index passes allocate and free megabytes; glibc keeps freed pages unless asked.
    Without this the daemon's RSS settles at its highest point instead of what it holds."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


def stuck_policy(settings: MetricsConfig) -> StuckPolicy:
    stuck = settings.stuck
    return StuckPolicy(stuck.running_after, stuck.per_pipeline, stuck.paused_after)


class Refresher:
    def __init__(self, reader: FlujoReader, settings: Callable[[], MetricsConfig], clock: Clock) -> None:
        self.reader = reader
        self._settings = settings
        self._clock = clock
        self._state = ExporterState()
        self._busy = threading.Lock()
        metrics = settings()
        self._tracker = FinishTracker(
            max_pipelines=metrics.max_pipelines,
            max_steps=metrics.max_steps,
            duration_window=metrics.run_duration_window,
        )

    @property
    def state(self) -> ExporterState:
        return self._state

    def refresh(self, *, force_all: bool = False) -> ExporterState:
        """Run every due phase once; returns the new state (or the current one if already busy)."""
        if not self._busy.acquire(blocking=False):
            log.warning("refresh still running, skipping this one")
            return self._state
        try:
            self._state = self._refresh(force_all)
            return self._state
        finally:
            self._busy.release()

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh every ``refresh_interval`` until ``stop`` is set; a slow refresh times out."""
        while not stop.is_set():
            settings = self._settings()
            try:
                await asyncio.wait_for(asyncio.to_thread(self.refresh), settings.refresh_timeout.total_seconds())
            except TimeoutError:
                log.error("refresh of %s took longer than %s", self.reader.path, settings.refresh_timeout)
                self._record_timeout()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.refresh_interval.total_seconds())

    def _refresh(self, force_all: bool) -> ExporterState:
        state = self._state
        now = self._clock()
        settings = self._settings()
        phases = dict(state.phases)
        errors = Counter(state.errors)
        problem: DatabaseUnavailable | None = None
        schema, fast, counts = state.schema, state.fast, state.counts
        aggregates, finished = state.aggregates, state.finished

        def attempt(phase: str, work: Callable[[], None]) -> None:
            nonlocal problem
            started = time.perf_counter()
            try:
                work()
            except DatabaseUnavailable as exc:
                problem = problem or exc
                errors[exc.problem] += 1
                phases[phase] = replace(phases[phase], success=False, duration_s=time.perf_counter() - started)
                log.warning("%s refresh failed: %s", phase, exc.message)
                return
            phases[phase] = PhaseHealth(True, time.perf_counter() - started, now)

        def snapshot() -> None:
            nonlocal schema, fast
            schema, fast = self.reader.fast_stats(now, stuck_policy(settings))

        def count() -> None:
            nonlocal counts
            counts = self.reader.count_stats(now)

        def watermarks() -> None:
            nonlocal finished
            caught_up = False
            while not caught_up:
                with self.reader.session() as session:
                    caught_up = self._tracker.update(session.conn, session.schema, now)
            finished = self._tracker.totals()

        def aggregate() -> None:
            nonlocal aggregates
            aggregates = self.reader.aggregate_stats(now)

        def due(phase: str, every: timedelta) -> bool:
            last = phases[phase].last_success
            return force_all or last is None or now - last >= every

        heavy = not self._tracker.seeded  # the first pass seeds the watermark counters
        attempt(SNAPSHOT, snapshot)
        if problem is None:
            attempt(WATERMARKS, watermarks)
        if problem is None and due(COUNTS, settings.counts_interval):
            heavy = True
            attempt(COUNTS, count)
        if problem is None and due(AGGREGATES, settings.aggregate_interval):
            heavy = True
            attempt(AGGREGATES, aggregate)
        if problem is None and heavy:
            release_free_memory()
        db_bytes, wal_bytes = self.reader.file_sizes()
        bad_values = Counter(state.bad_values)
        if fast is not None and fast is not state.fast:
            self._report_bad_values(fast.bad_values, bad_values)
        if counts is not None and counts is not state.counts:
            self._report_bad_values(counts.bad_values, bad_values)
        if aggregates is not None and aggregates is not state.aggregates:
            self._report_bad_values(aggregates.bad_values, bad_values)
        return ExporterState(
            schema, fast, counts, aggregates, finished, db_bytes, wal_bytes, problem, phases, errors, bad_values
        )

    def _report_bad_values(self, found: tuple[BadValue, ...], bad_values: Counter[tuple[str, str]]) -> None:
        for bad in found:
            bad_values[(bad.table, bad.column)] += bad.count
        for bad in found[:_BAD_VALUES_LOGGED]:
            log.warning("%s: %s", self.reader.path, bad.describe())

    def _record_timeout(self) -> None:
        state = self._state
        errors = Counter(state.errors)
        errors[Problem.TIMEOUT] += 1
        phases = dict(state.phases)
        phases[SNAPSHOT] = replace(phases[SNAPSHOT], success=False)
        problem = DatabaseUnavailable(Problem.TIMEOUT, f"{self.reader.path}: refresh timed out")
        self._state = replace(state, phases=phases, errors=errors, problem=problem)
