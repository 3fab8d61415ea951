"""A small in-process scheduler: interval + random jitter, never two runs of one job at once, a timeout.

All time comes from the injected clock and the injected ``sleep``: the scheduler starts due jobs and
cancels overdue ones in :meth:`Scheduler.tick`, which returns the next instant it needs to wake up.
Tests step a :class:`~exporter.clock.ManualClock` instead of sleeping.

A run's timeout is measured on the same clock.  Cancelling a run stops it at its next ``await``; a
job that runs blocking work in a thread finishes that one small piece (one transaction) first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from exporter.clock import Clock

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
JobFunction = Callable[[], Awaitable[None]]


class JobError(Exception):
    """A job run failed for a reason worth one clear log line (no traceback)."""


class JobLocked(Exception):
    """The run did not start because another exporter holds the job's lock (it runs the job): neither
    a run nor a failure, counted apart (``lock_skipped``)."""


@dataclass(frozen=True)
class Schedule:
    interval: timedelta
    jitter: timedelta
    timeout: timedelta


@dataclass(frozen=True)
class JobStats:
    """What the metrics show for one job; replaced as a whole (readers in other threads see a consistent one)."""

    runs: int = 0
    errors: int = 0
    skipped: int = 0
    lock_skipped: int = 0  # runs another exporter's advisory lock kept from starting (Postgres HA pairs)
    timeouts: int = 0
    success: bool = False
    duration_s: float = 0.0
    last_success: datetime | None = None
    last_error: str | None = None
    running: bool = False
    unexpected: bool = False  # the last failure was not a JobError: a bug or a value nobody foresaw


@dataclass
class _Entry:
    name: str
    run: JobFunction
    schedule: Schedule
    next_due: datetime
    stats: JobStats = field(default_factory=JobStats)
    task: asyncio.Task[None] | None = None
    deadline: datetime | None = None
    timed_out: bool = False


class Scheduler:
    def __init__(self, clock: Clock, *, sleep: Sleep | None = None, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._logged: set[tuple[str, str]] = set()

    def add(self, name: str, run: JobFunction, schedule: Schedule) -> None:
        if name in self._entries:
            raise ValueError(f"job {name!r} added twice")
        self._entries[name] = _Entry(name, run, schedule, self._clock() + self._jitter(schedule))

    def inherit(self, name: str, stats: JobStats) -> None:
        """Carry a job's counters over from the scheduler this one replaces (a config reload)."""
        self._update(self._entries[name], **{**vars(stats), "running": False})

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def stats(self, name: str) -> JobStats:
        with self._lock:
            return self._entries[name].stats

    def next_due(self, name: str) -> datetime:
        return self._entries[name].next_due

    def _jitter(self, schedule: Schedule) -> timedelta:
        return timedelta(seconds=self._rng.uniform(0.0, schedule.jitter.total_seconds()))

    def _update(self, entry: _Entry, **changes: object) -> None:
        with self._lock:
            entry.stats = replace(entry.stats, **changes)  # type: ignore[arg-type]

    # -- one step -------------------------------------------------------------------------------

    async def tick(self) -> datetime | None:
        """Cancel overdue runs, start due jobs; returns when the next thing is due (None: no jobs)."""
        now = self._clock()
        for entry in self._entries.values():
            if entry.task is not None and entry.deadline is not None and now >= entry.deadline and not entry.timed_out:
                entry.timed_out = True
                entry.task.cancel()
        for entry in self._entries.values():
            if now < entry.next_due:
                continue
            entry.next_due = now + entry.schedule.interval + self._jitter(entry.schedule)
            if entry.task is not None:
                self._update(entry, skipped=entry.stats.skipped + 1)
                log.warning("job %s: previous run still going, skipping this one", entry.name)
                continue
            self._start(entry, now)
        await asyncio.sleep(0)  # let new runs start before the caller sleeps
        wake = [e.next_due for e in self._entries.values()]
        wake += [e.deadline for e in self._entries.values() if e.task is not None and e.deadline and not e.timed_out]
        return min(wake) if wake else None

    def _start(self, entry: _Entry, now: datetime) -> None:
        entry.deadline = now + entry.schedule.timeout
        entry.timed_out = False
        self._update(entry, running=True)
        entry.task = asyncio.create_task(self._execute(entry, now), name=f"job-{entry.name}")

    async def _execute(self, entry: _Entry, started: datetime) -> None:
        error: str | None = None
        unexpected = False
        try:
            await entry.run()
        except JobLocked as exc:
            # Success, last success and duration stay those of this exporter's own last run: the
            # other exporter's metrics show the runs it does.
            entry.task = entry.deadline = None
            self._update(entry, lock_skipped=entry.stats.lock_skipped + 1, running=False)
            log.debug("job %s skipped: %s", entry.name, exc)
            return
        except asyncio.CancelledError:
            if not entry.timed_out:  # the daemon is stopping: not a failure of the job
                entry.task = entry.deadline = None
                self._update(entry, running=False)
                log.info("job %s cancelled (stopping)", entry.name)
                raise
            error = f"timed out after {entry.schedule.timeout.total_seconds():g}s"
        except JobError as exc:
            error = str(exc)
        except Exception as exc:
            key = (entry.name, type(exc).__name__)
            if key not in self._logged:  # the traceback once; the one-line error below every time
                self._logged.add(key)
                log.exception("job %s failed unexpectedly", entry.name)
            error = f"{type(exc).__name__}: {exc}"
            unexpected = True
        self._finish(entry, started, error, unexpected=unexpected)

    def _finish(self, entry: _Entry, started: datetime, error: str | None, *, unexpected: bool = False) -> None:
        ended = self._clock()
        duration = max((ended - started).total_seconds(), 0.0)
        stats = entry.stats
        entry.task = None
        entry.deadline = None
        if error is None:
            self._update(
                entry,
                runs=stats.runs + 1,
                success=True,
                duration_s=duration,
                last_success=ended,
                running=False,
                unexpected=False,
            )
            log.debug("job %s succeeded in %.3fs", entry.name, duration)
            return
        self._update(
            entry,
            runs=stats.runs + 1,
            errors=stats.errors + 1,
            timeouts=stats.timeouts + (1 if entry.timed_out else 0),
            success=False,
            duration_s=duration,
            last_error=error,
            running=False,
            unexpected=unexpected,
        )
        log.error("job %s failed: %s (retrying at the next run)", entry.name, error)

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set; then cancel runs still going and wait for them."""
        try:
            while not stop.is_set():
                wake = await self.tick()
                if stop.is_set():
                    break
                delay = 3600.0 if wake is None else max((wake - self._clock()).total_seconds(), 0.0)
                await self._wait(delay, stop)
        finally:
            await self.cancel_all()

    async def _wait(self, delay: float, stop: asyncio.Event) -> None:
        sleeper = asyncio.ensure_future(self._sleep(delay))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (sleeper, stopper):
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending

    async def idle(self) -> None:
        """Wait until no run is going (runs are not cancelled)."""
        while tasks := [e.task for e in self._entries.values() if e.task is not None]:
            await asyncio.wait(tasks)

    async def cancel_all(self) -> None:
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_now(self, name: str) -> JobStats:
        """Run one job immediately and wait for it (same bookkeeping and timeout as a scheduled run)."""
        entry = self._entries[name]
        if entry.task is not None:
            self._update(entry, skipped=entry.stats.skipped + 1)
            return entry.stats
        self._start(entry, self._clock())
        assert entry.task is not None
        task = entry.task
        timeout = entry.schedule.timeout.total_seconds()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            entry.timed_out = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return entry.stats
