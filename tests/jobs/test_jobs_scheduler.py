"""The scheduler: jitter bounds, no overlapping runs, timeouts and counters, all on a ManualClock."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime, timedelta

from exporter.clock import ManualClock
from exporter.jobs.scheduler import JobError, Schedule, Scheduler

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


class FakeTime:
    """An injectable sleep that moves the clock instead of waiting; stops the loop at ``until``."""

    def __init__(self, clock: ManualClock, until: datetime) -> None:
        self.clock = clock
        self.until = until
        self.stop = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.clock.advance(min(seconds, max((self.until - self.clock()).total_seconds(), 0.0)))
        for _ in range(5):  # let started runs progress
            await asyncio.sleep(0)
        if self.clock() >= self.until:
            self.stop.set()


def schedule(interval: float, jitter: float = 0.0, timeout: float = 3600.0) -> Schedule:
    return Schedule(timedelta(seconds=interval), timedelta(seconds=jitter), timedelta(seconds=timeout))


async def test_jitter_stays_within_bounds_and_varies() -> None:
    clock = ManualClock(T0)
    fake = FakeTime(clock, T0 + timedelta(hours=2))
    scheduler = Scheduler(clock, sleep=fake.sleep, rng=random.Random(7))
    starts: list[datetime] = []

    async def job() -> None:
        starts.append(clock())

    scheduler.add("j", job, schedule(60, jitter=10))
    await scheduler.run(fake.stop)
    assert len(starts) > 100
    assert T0 <= starts[0] <= T0 + timedelta(seconds=10)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert all(60 <= gap <= 70 for gap in gaps), gaps
    assert len({round(g, 3) for g in gaps}) > 10  # really random
    stats = scheduler.stats("j")
    assert stats.runs == len(starts) and stats.errors == 0 and stats.success


async def test_no_overlap_skips_and_counts() -> None:
    clock = ManualClock(T0)
    scheduler = Scheduler(clock, sleep=None, rng=random.Random(1))
    release = asyncio.Event()
    started = 0

    async def slow() -> None:
        nonlocal started
        started += 1
        await release.wait()

    scheduler.add("slow", slow, schedule(10))
    await scheduler.tick()
    assert started == 1 and scheduler.stats("slow").running
    for _ in range(3):
        clock.advance(10)
        await scheduler.tick()
    assert started == 1
    assert scheduler.stats("slow").skipped == 3
    release.set()
    await scheduler.idle()
    assert scheduler.stats("slow").runs == 1 and not scheduler.stats("slow").running
    clock.advance(10)
    release.clear()
    await scheduler.tick()
    assert started == 2
    await scheduler.cancel_all()


async def test_timeout_cancels_counts_and_next_run_happens() -> None:
    clock = ManualClock(T0)
    fake = FakeTime(clock, T0 + timedelta(seconds=122))
    scheduler = Scheduler(clock, sleep=fake.sleep)
    calls: list[datetime] = []
    cancelled = 0

    async def hangs() -> None:
        nonlocal cancelled
        calls.append(clock())
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled += 1
            raise

    scheduler.add("hangs", hangs, schedule(60, timeout=5))
    await scheduler.run(fake.stop)
    assert calls == [T0, T0 + timedelta(seconds=60), T0 + timedelta(seconds=120)]
    stats = scheduler.stats("hangs")
    assert stats.timeouts == 2 and stats.errors == 2 and stats.runs == 2  # the third was still going at stop
    assert cancelled == 3
    assert stats.last_error == "timed out after 5s" and not stats.success
    assert stats.duration_s == 5.0


async def test_counters_success_error_duration_last_success() -> None:
    clock = ManualClock(T0)
    scheduler = Scheduler(clock)
    outcomes = iter([JobError("database is locked"), RuntimeError("boom"), None])

    async def job() -> None:
        clock.advance(2.5)
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    scheduler.add("j", job, schedule(60))
    first = await scheduler.run_now("j")
    assert (first.runs, first.errors, first.success, first.last_success) == (1, 1, False, None)
    assert first.last_error == "database is locked"
    second = await scheduler.run_now("j")
    assert second.errors == 2 and second.last_error == "RuntimeError: boom"
    third = await scheduler.run_now("j")
    assert (third.runs, third.errors, third.success) == (3, 2, True)
    assert third.duration_s == 2.5
    assert third.last_success == T0 + timedelta(seconds=7.5)


async def test_jobs_are_independent_and_stop_cancels_running() -> None:
    clock = ManualClock(T0)
    fake = FakeTime(clock, T0 + timedelta(seconds=95))
    scheduler = Scheduler(clock, sleep=fake.sleep)
    counts = {"fast": 0, "slow": 0}

    async def fast() -> None:
        counts["fast"] += 1

    async def slow() -> None:
        counts["slow"] += 1
        await asyncio.Event().wait()

    scheduler.add("fast", fast, schedule(10))
    scheduler.add("slow", slow, schedule(30))
    await scheduler.run(fake.stop)
    assert counts == {"fast": 10, "slow": 1}
    assert scheduler.stats("slow").skipped == 3
    assert not scheduler.stats("slow").running  # cancelled on stop
