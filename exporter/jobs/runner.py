"""What the daemon builds: the enabled jobs on one scheduler, and the collector of their metrics."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.registry import Collector

from exporter.clock import Clock, system_clock
from exporter.components import Health
from exporter.engines.flujo.jobs.cleanup import CleanupJob, ExportedFn
from exporter.engines.flujo.jobs.stale import StaleTasksJob
from exporter.jobs.alerts import StuckAlertsJob
from exporter.jobs.config import JOB_NAMES, JobsConfig
from exporter.jobs.db import JobTarget, Target
from exporter.jobs.delivery import ALERTMANAGER, WEBHOOK
from exporter.jobs.metrics import JobMetrics, JobsCollector
from exporter.jobs.pg import AdvisoryLease, PostgresTarget
from exporter.jobs.scheduler import JobFunction, JobLocked, JobStats, Schedule, Scheduler, Sleep
from exporter.jobs.settings import JobSettings
from exporter.reader import Reader

if TYPE_CHECKING:
    from exporter.config import MetricsConfig


class JobRunner:
    """Runs the enabled jobs until stopped.

    ``writer_tz`` is the zone of naive local times the engine writes (``db.writer_timezone``).  ``exported``
    comes from the span exporter (e.g. ``Tailer.exported_run_ids``): given run ids, it returns those
    whose spans are all exported; the cleanup never deletes the others.  It is only asked about runs
    that have span rows, from a worker thread (it must be thread-safe; it may do blocking I/O).
    ``settings`` gives the current ``metrics`` section, whose ``metrics.stuck`` is the stuck rule of
    both the stuck metrics and the stuck-run alerts (default: the defaults).
    ``sleep`` and ``rng`` are for tests (the clock alone drives the schedule).  ``previous`` is the
    runner this one replaces after a config reload: its counters are carried over.

    ``db_path`` is a SQLite file, or a :class:`~exporter.jobs.pg.PostgresTarget`: then every write job
    runs only while this exporter holds the job's advisory lock (:class:`~exporter.jobs.pg.AdvisoryLease`);
    a run another exporter's lock keeps from starting counts as ``lock_skipped``.  ``reader`` is only
    needed by the stuck-run alerts.
    """

    def __init__(
        self,
        config: JobsConfig,
        db_path: Path | PostgresTarget,
        writer_tz: tzinfo,
        reader: Reader | None,
        clock: Clock = system_clock,
        exported: ExportedFn | None = None,
        *,
        settings: Callable[[], MetricsConfig] | None = None,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        previous: JobRunner | None = None,
    ) -> None:
        self.config = config
        sleep = sleep or asyncio.sleep
        enabled: dict[str, bool] = {name: bool(getattr(config, name).enabled) for name in JOB_NAMES}
        alerts = config.stuck_alerts
        receivers = tuple(
            name
            for name, present in ((ALERTMANAGER, alerts.alertmanager), (WEBHOOK, alerts.webhook))
            if present is not None and alerts.enabled
        )
        self.metrics = JobMetrics(enabled, receivers)
        self.scheduler = Scheduler(clock, sleep=sleep, rng=rng)
        target: JobTarget = (
            db_path
            if isinstance(db_path, PostgresTarget)
            else Target(db_path, config.write_busy_timeout.total_seconds())
        )
        self.leases: dict[str, AdvisoryLease] = {}
        self.cleanup: CleanupJob | None = None
        self.stale: StaleTasksJob | None = None
        self.alerts: StuckAlertsJob | None = None
        if config.cleanup.enabled:
            self.cleanup = CleanupJob(
                config.cleanup, target, writer_tz, clock, self.metrics, sleep=sleep, exported=exported
            )
            self.scheduler.add("cleanup", self._leased("cleanup", target, self.cleanup), _schedule(config.cleanup))
        if config.stale_background_tasks.enabled:
            self.stale = StaleTasksJob(config.stale_background_tasks, target, writer_tz, clock, self.metrics)
            self.scheduler.add(
                "stale_background_tasks",
                self._leased("stale_background_tasks", target, self.stale),
                _schedule(config.stale_background_tasks),
            )
        if alerts.enabled:
            if reader is None:
                raise ValueError("the stuck-run alerts need a reader")
            self.alerts = StuckAlertsJob(
                alerts, reader, clock, self.metrics, settings or _default_settings, sleep=sleep
            )
            # On Postgres under its own advisory lock too: an HA pair sends each alert once (Alertmanager
            # would deduplicate, a webhook would not).
            self.scheduler.add("stuck_alerts", self._leased("stuck_alerts", target, self.alerts), _schedule(alerts))
        if previous is not None:
            self._carry_over(previous)

    def _leased(self, name: str, target: JobTarget, job: JobFunction) -> JobFunction:
        """``job`` as it runs on ``target``: on Postgres only under the job's advisory lock; a SQLite
        file has one host, hence one exporter, and its writers queue on the file lock anyway."""
        if not isinstance(target, PostgresTarget):
            return job
        lease = self.leases[name] = AdvisoryLease(target, name)

        async def leased() -> None:
            # The lease lives in the runner, not in this coroutine: a run cancelled while the lock is
            # being taken leaves the connection to the lease, which keeps or closes it, never leaks it.
            if not await asyncio.to_thread(lease.acquire):
                raise JobLocked(f"another exporter holds the advisory lock of job {name} on {target.path}")
            await job()

        return leased

    async def release(self) -> None:
        """Give up every advisory lock (the other exporter of an HA pair takes the jobs over)."""
        for lease in self.leases.values():
            await asyncio.to_thread(lease.release)

    def _carry_over(self, previous: JobRunner) -> None:
        """A reload builds a new runner: its counters go on from the old one's values."""
        self.metrics.inherit(previous.metrics)
        for name in self.scheduler.names:
            stats = previous.stats(name)
            if stats is not None:
                self.scheduler.inherit(name, stats)

    async def run(self, stop: asyncio.Event) -> None:
        """Run the enabled jobs on their schedules until ``stop`` is set (returns at once if none is)."""
        if not self.scheduler.names:
            return
        try:
            await self.scheduler.run(stop)
        finally:
            await self.release()

    async def run_job(self, name: str) -> JobStats:
        """Run one enabled job now and wait for it (tests, one-shot use)."""
        if name not in self.scheduler.names:
            raise KeyError(f"job {name!r} is not enabled (enabled: {', '.join(self.scheduler.names) or 'none'})")
        return await self.scheduler.run_now(name)

    def stats(self, name: str) -> JobStats | None:
        return self.scheduler.stats(name) if name in self.scheduler.names else None

    def collector(self) -> Collector:
        return JobsCollector(self.metrics, self.stats)

    def health(self) -> Health:
        """Not working when a job's last run failed unexpectedly (a JobError such as "database is
        locked" is an expected, retried condition shown by the job metrics, not a readiness issue)."""
        broken = []
        for name in self.scheduler.names:
            stats = self.scheduler.stats(name)
            if stats.unexpected and not stats.success:
                broken.append(f"job {name} failing: {stats.last_error}")
        return Health(not broken, "; ".join(broken) or "ok")


def _default_settings() -> MetricsConfig:
    from exporter.config import MetricsConfig  # not at import time: exporter.config imports exporter.jobs.config

    return MetricsConfig()


def _schedule(job: JobSettings) -> Schedule:
    return Schedule(job.interval, job.jitter, job.timeout)
