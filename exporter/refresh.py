"""Keeps an immutable snapshot of the DB current; scrapes only read it.

One refresh at a time (single-flight): a refresh that is still running when the next one is due
makes that one a no-op.  Each phase records its own success, duration and last success; a failed
phase keeps the last good values, so scrapes go on serving them marked stale.

The refresh is its own watchdog: whatever a phase raises (a DB problem, a value no parser
foresaw, a bug) is caught, counted by reason, logged once with its traceback, shown in the phase's
success metric and in readiness, and the next refresh runs as usual.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from exporter.clock import Clock
from exporter.config import MetricsConfig
from exporter.engines import engine
from exporter.engines.base import EngineSchema, EngineStats, Tier
from exporter.model import Overview
from exporter.reader import DatabaseUnavailable, Problem, Reader
from exporter.reader.badvalues import BadValue
from exporter.readiness import NO_SNAPSHOT, READY, REFRESH_FAILING, STALE_SNAPSHOT, Readiness

log = logging.getLogger(__name__)

SNAPSHOT, COUNTS, WATERMARKS, AGGREGATES = "snapshot", "counts", "watermarks", "aggregates"
PHASES = (SNAPSHOT, COUNTS, WATERMARKS, AGGREGATES)
# Distinct bad values logged (one line each, once); the counter counts every one of them.
_BAD_VALUES_LOGGED = 1_000
# The served snapshot is stale, and the daemon not ready, when older than this many intervals.
STALE_AFTER_INTERVALS = 3


@dataclass(frozen=True)
class PhaseHealth:
    success: bool = False
    duration_s: float = 0.0
    last_success: datetime | None = None
    error: str | None = None  # why the last attempt failed (for logs and /readyz, never a label)


@dataclass(frozen=True)
class ExporterState:
    schema: EngineSchema | None = None
    fast: Tier | None = None  # the engine's snapshot tier
    counts: Tier | None = None
    aggregates: Tier | None = None
    finished: object = None  # the engine's totals of runs seen finishing
    overview: Overview | None = None
    db_bytes: int = 0
    wal_bytes: int = 0
    problem: DatabaseUnavailable | None = None  # the DB could not be read by the last refresh
    phases: dict[str, PhaseHealth] = field(default_factory=lambda: {p: PhaseHealth() for p in PHASES})
    errors: Counter[str] = field(default_factory=Counter)  # by Problem
    bad_values: Counter[tuple[str, str]] = field(default_factory=Counter)  # by (table, column)
    refreshed_at: datetime | None = None  # when the last refresh ended, whatever its outcome

    def failing_phases(self) -> dict[str, str]:
        """Phases whose last attempt failed, with the reason."""
        return {name: health.error or "failed" for name, health in self.phases.items() if health.error is not None}


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


@dataclass
class _Pass:
    """What one refresh builds, starting from the previous state's values."""

    now: datetime
    settings: MetricsConfig
    force_all: bool
    previous: ExporterState
    phases: dict[str, PhaseHealth]
    errors: Counter[str]
    bad_values: Counter[tuple[str, str]]
    schema: EngineSchema | None
    fast: Tier | None
    counts: Tier | None
    aggregates: Tier | None
    finished: object
    problem: DatabaseUnavailable | None = None
    heavy: bool = False

    @classmethod
    def starting_from(cls, state: ExporterState, now: datetime, settings: MetricsConfig, force_all: bool) -> _Pass:
        return cls(
            now=now,
            settings=settings,
            force_all=force_all,
            previous=state,
            phases=dict(state.phases),
            errors=Counter(state.errors),
            bad_values=Counter(state.bad_values),
            schema=state.schema,
            fast=state.fast,
            counts=state.counts,
            aggregates=state.aggregates,
            finished=state.finished,
        )

    def due(self, phase: str, every: timedelta) -> bool:
        last = self.phases[phase].last_success
        return self.force_all or last is None or self.now - last >= every


class Refresher:
    def __init__(self, reader: Reader, settings: Callable[[], MetricsConfig], clock: Clock) -> None:
        self.reader = reader
        self._settings = settings
        self._clock = clock
        self._state = ExporterState()
        self._busy = threading.Lock()
        # The refresh tiers of the engine that wrote the file, made when it is first recognised.
        self._stats: EngineStats | None = None
        self._stats_engine: str | None = None
        self._generation = reader.generation
        self._logged_failures: set[tuple[str, str]] = set()
        self._logged_bad: set[tuple[str, str, str, str]] = set()

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
        """Refresh every ``refresh_interval`` until ``stop`` is set; a slow refresh times out.
        Nothing a refresh raises ends this loop."""
        while not stop.is_set():
            settings = self._settings()
            try:
                await asyncio.wait_for(asyncio.to_thread(self.refresh), settings.refresh_timeout.total_seconds())
            except TimeoutError:
                log.error("refresh of %s took longer than %s", self.reader.path, settings.refresh_timeout)
                self._record_timeout()
            except Exception as exc:  # a bug outside the phases' own guard: keep refreshing
                self._record_crash(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.refresh_interval.total_seconds())

    def ready(self, now: datetime) -> Readiness:
        """Readiness from the last refresh: the DB was read, every phase works, the snapshot is fresh."""
        state = self._state
        if state.problem is not None:
            return Readiness(False, state.problem.problem.value, state.problem.message)
        failing = state.failing_phases()
        if failing:
            why = "; ".join(f"{phase} refresh failing: {reason}" for phase, reason in sorted(failing.items()))
            return Readiness(False, REFRESH_FAILING, why)
        if state.fast is None:
            return Readiness(False, NO_SNAPSHOT, "no snapshot taken yet")
        settings = self._settings()
        limit = max(
            settings.refresh_interval * STALE_AFTER_INTERVALS, settings.refresh_timeout + settings.refresh_interval
        )
        age = now - state.fast.taken_at
        if age > limit:
            why = f"snapshot is stale: taken {age.total_seconds():.0f}s ago (limit {limit.total_seconds():.0f}s)"
            return Readiness(False, STALE_SNAPSHOT, why)
        return Readiness(True, READY)

    # -- one refresh ------------------------------------------------------------------------------

    def _refresh(self, force_all: bool) -> ExporterState:
        run = _Pass.starting_from(self._state, self._clock(), self._settings(), force_all)
        self._attempt(run, SNAPSHOT, self._snapshot)  # notices a file swapped in at the DB path
        run.heavy = self._stats is None or not self._stats.seeded  # the first pass seeds the counters
        if run.problem is None:
            self._attempt(run, WATERMARKS, self._watermarks)
        if run.problem is None and run.due(COUNTS, run.settings.counts_interval):
            run.heavy = True
            self._attempt(run, COUNTS, self._count)
        if run.problem is None and run.due(AGGREGATES, run.settings.aggregate_interval):
            run.heavy = True
            self._attempt(run, AGGREGATES, self._aggregate)
        if run.problem is None and run.heavy:
            release_free_memory()
        return self._finish(run)

    def _stats_for(self, schema: EngineSchema) -> EngineStats:
        """The tiers of the engine that wrote the file now at the DB path.

        Another file of the same engine: the old file's rowid watermarks would miss its new rows.
        The counters go on from their current values (no reset, no double count): the new file's
        rows present now are its seed, only what finishes from here on is added.  A file of another
        engine starts that engine's tiers afresh."""
        if self._stats is None or self._stats_engine != schema.engine:
            self._stats = engine(schema.engine).new_stats(self._settings())
            self._stats_engine = schema.engine
            self._generation = self.reader.generation
        elif self.reader.generation != self._generation:
            log.warning("%s was replaced by another file: following the new file's rows from now on", self.reader.path)
            self._generation = self.reader.generation
            self._stats = self._stats.restarted()
        return self._stats

    def _attempt(self, run: _Pass, phase: str, work: Callable[[_Pass], None]) -> None:
        started = time.perf_counter()
        try:
            work(run)
        except DatabaseUnavailable as exc:
            run.problem = run.problem or exc
            self._failed(run, phase, exc.problem, exc.message, started)
            log.warning("%s refresh failed: %s", phase, exc.message)
            return
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self._failed(run, phase, Problem.INTERNAL, reason, started)
            self._log_once(phase, exc)
            return
        run.phases[phase] = PhaseHealth(True, time.perf_counter() - started, run.now)

    @staticmethod
    def _failed(run: _Pass, phase: str, problem: Problem, reason: str, started: float) -> None:
        run.errors[problem] += 1
        run.phases[phase] = replace(
            run.phases[phase], success=False, duration_s=time.perf_counter() - started, error=reason
        )

    def _log_once(self, phase: str, exc: Exception) -> None:
        """The traceback once per phase and kind of error; a short line every later time."""
        key = (phase, type(exc).__name__)
        if key in self._logged_failures:
            log.error("%s refresh failed again: %s: %s", phase, type(exc).__name__, exc)
            return
        self._logged_failures.add(key)
        log.error(
            "%s refresh of %s failed: %s: %s (the last good values are served; retrying every refresh)",
            phase,
            self.reader.path,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )

    def _snapshot(self, run: _Pass) -> None:
        with self.reader.session() as session:
            if run.schema is not None and run.schema.engine != session.schema.engine:
                # Another engine's file took the path: the old tiers describe nothing here any more.
                run.counts = run.aggregates = run.finished = None
                run.force_all = True
            run.schema = session.schema
            run.fast = self._stats_for(session.schema).snapshot(session, run.now, run.settings)

    def _watermarks(self, run: _Pass) -> None:
        caught_up = False
        while not caught_up:
            with self.reader.session() as session:
                caught_up = self._stats_for(session.schema).follow_finished(session, run.now)
        run.finished = self._current_stats().finished

    def _count(self, run: _Pass) -> None:
        with self.reader.session() as session:
            run.counts = self._stats_for(session.schema).counts(session, run.now, run.settings)

    def _aggregate(self, run: _Pass) -> None:
        with self.reader.session() as session:
            run.aggregates = self._stats_for(session.schema).aggregates(session, run.now, run.settings)

    def _current_stats(self) -> EngineStats:
        if self._stats is None:  # every phase but the snapshot runs after a successful snapshot
            raise RuntimeError("no engine recognised yet")
        return self._stats

    def _finish(self, run: _Pass) -> ExporterState:
        previous = run.previous
        for stats, before in (
            (run.fast, previous.fast),
            (run.counts, previous.counts),
            (run.aggregates, previous.aggregates),
        ):
            if stats is not None and stats is not before:
                self._report_bad_values(stats.bad_values, run.bad_values)
        overview = previous.overview
        if self._stats is not None:
            self._report_bad_values(self._stats.take_bad_values(), run.bad_values)
            overview = self._stats.overview(run.fast, run.counts, run.settings)
        db_bytes, wal_bytes = self.reader.file_sizes()
        return ExporterState(
            schema=run.schema,
            fast=run.fast,
            counts=run.counts,
            aggregates=run.aggregates,
            finished=run.finished,
            overview=overview,
            db_bytes=db_bytes,
            wal_bytes=wal_bytes,
            problem=run.problem,
            phases=run.phases,
            errors=run.errors,
            bad_values=run.bad_values,
            refreshed_at=run.now,
        )

    def _report_bad_values(self, found: Iterable[BadValue], bad_values: Counter[tuple[str, str]]) -> None:
        for bad in found:
            bad_values[(bad.table, bad.column)] += bad.count
            key = (bad.table, bad.column, bad.run_id, bad.value)
            if key not in self._logged_bad and len(self._logged_bad) < _BAD_VALUES_LOGGED:
                self._logged_bad.add(key)
                log.warning("%s: %s (row skipped)", self.reader.path, bad.describe())

    def _record_timeout(self) -> None:
        problem = DatabaseUnavailable(Problem.TIMEOUT, f"{self.reader.path}: refresh timed out")
        self._record_outside_phases(problem, "refresh timed out")

    def _record_crash(self, exc: Exception) -> None:
        self._log_once("refresh", exc)
        self._record_outside_phases(None, f"{type(exc).__name__}: {exc}")

    def _record_outside_phases(self, problem: DatabaseUnavailable | None, reason: str) -> None:
        state = self._state
        errors = Counter(state.errors)
        errors[problem.problem if problem is not None else Problem.INTERNAL] += 1
        phases = dict(state.phases)
        phases[SNAPSHOT] = replace(phases[SNAPSHOT], success=False, error=reason)
        self._state = replace(state, phases=phases, errors=errors, problem=problem or state.problem)
