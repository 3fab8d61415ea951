"""Marianne's own metric families (``marianne_*``), read from the tiers only: the workspace
families over a ``.marianne-state.db`` (summed over the workspaces read when the target is the
conductor's registry), the ``marianne_conductor_*`` and ``marianne_workspace*`` ones over the
registry."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.collectors.base import View, ViewCollector, gauge_from
from exporter.engines.marianne.snapshot import (
    STUCK_REASONS,
    Aggregates,
    ConductorSnapshot,
    Counts,
    RegistrySnapshot,
    WorkspaceSnapshot,
)
from exporter.engines.marianne.statuses import JOB_STATUSES, REGISTRY_STATUSES, SHEET_STATUSES
from exporter.engines.marianne.tracking import FINISHED_STATUSES, Followed
from exporter.labels import cap_statuses, fold
from exporter.model import Histogram, StuckReason
from exporter.reader.errors import Problem


def marianne_collectors(view: View) -> Sequence[Collector]:
    return (MarianneCollector(view),)


def _stuck(name: str, documentation: str, stuck: dict[StuckReason, int]) -> Metric:
    return gauge_from(name, documentation, ["reason"], [((r.value,), float(stuck.get(r, 0))) for r in STUCK_REASONS])


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], histogram.buckets(), histogram.total)
    return family


class MarianneCollector(ViewCollector):
    def collect(self) -> Iterator[Metric]:
        state = self.view.state()
        if isinstance(state.fast, WorkspaceSnapshot):
            yield from self._workspace(state.fast)
        elif isinstance(state.fast, ConductorSnapshot):
            yield from self._registry(state.fast.registry)
            yield from self._health(state.fast)
            if state.fast.workspaces is not None:
                yield from self._workspace(state.fast.workspaces)
        if isinstance(state.counts, Counts) and state.counts.sheets_by_status is not None:
            limit = self.view.settings().max_statuses
            by_status = cap_statuses(state.counts.sheets_by_status, SHEET_STATUSES, limit)
            yield gauge_from(
                "marianne_sheets",
                self.counted("Sheets of every job in the workspace by status (all eleven, 0 when none)"),
                ["status"],
                [((status,), float(n)) for status, n in by_status.items()],
            )
        if isinstance(state.aggregates, Aggregates) and state.aggregates.failures is not None:
            yield from self._aggregates(state.aggregates)
        if isinstance(state.finished, Followed):
            yield from self._followed(state.finished)

    def _workspace(self, snapshot: WorkspaceSnapshot) -> Iterator[Metric]:
        limit = self.view.settings().max_statuses
        jobs = cap_statuses(snapshot.jobs_by_status, JOB_STATUSES, limit)
        yield gauge_from(
            "marianne_jobs",
            self.cached("Jobs in the workspace by status (all seven, 0 when none)"),
            ["status"],
            [((status,), float(n)) for status, n in jobs.items()],
        )
        yield _stuck(
            "marianne_jobs_stuck",
            self.cached(
                "Running jobs judged stuck, one reason each: pid_dead (zombie; metrics.marianne.same_host_pid_check "
                "only) before idle (not updated for metrics.stuck.running_after)"
            ),
            snapshot.stuck,
        )
        yield gauge_from(
            "marianne_jobs_running_without_pid",
            self.cached("Running jobs with no pid (conductor-run jobs): no zombie check can see them"),
            [],
            [((), float(snapshot.running_without_pid))],
        )
        yield gauge_from(
            "marianne_jobs_stale",
            self.cached("Running jobs not updated for longer than metrics.stuck.running_after (an exporter rule)"),
            [],
            [((), float(snapshot.stale))],
        )
        if snapshot.zombies is not None:
            yield gauge_from(
                "marianne_jobs_zombie",
                self.cached("Running jobs whose pid is dead on this host (Marianne's is_zombie)"),
                [],
                [((), float(snapshot.zombies))],
            )

    def _registry(self, snapshot: RegistrySnapshot) -> Iterator[Metric]:
        limit = self.view.settings().max_statuses
        jobs = cap_statuses(snapshot.jobs_by_status, REGISTRY_STATUSES, limit)
        yield gauge_from(
            "marianne_conductor_jobs",
            self.cached("Jobs in the conductor registry by status (all eight, 0 when none)"),
            ["status"],
            [((status,), float(n)) for status, n in jobs.items()],
        )
        yield gauge_from(
            "marianne_conductor_orphaned_jobs",
            self.cached("Registry jobs queued or running: what the conductor fails as orphans when it restarts"),
            [],
            [((), float(snapshot.orphans))],
        )
        yield _stuck(
            "marianne_conductor_jobs_stuck",
            self.cached(
                "Running registry jobs judged stuck, one reason each: pid_dead (same-host check only) before "
                "idle (no event for metrics.stuck.running_after)"
            ),
            snapshot.stuck,
        )

    def _health(self, snapshot: ConductorSnapshot) -> Iterator[Metric]:
        yield gauge_from(
            "marianne_workspaces",
            self.cached(
                "Workspaces the registry's jobs name, by state: ok (read), missing (no .marianne-state.db), "
                "unreadable (left out of the sums), over_cap (beyond metrics.marianne.max_workspaces, not read)"
            ),
            ["state"],
            [((state,), float(n)) for state, n in snapshot.health.items()],
        )
        errors = CounterMetricFamily(
            "marianne_workspace_read_errors",
            "Failed reads of a workspace DB the registry names, by reason (the log names the workspace)",
            labels=["reason"],
        )
        for reason in Problem:
            errors.add_metric([reason.value], float(snapshot.read_errors.get(reason.value, 0)))
        yield errors

    def _followed(self, followed: Followed) -> Iterator[Metric]:
        outcomes = CounterMetricFamily(
            "marianne_execution_attempts",
            "execution_history attempts, each counted once when its outcome is decided: failed_then_retried "
            "(its sheet went on to another attempt), else success or failed as its sheet ended",
            labels=["outcome"],
        )
        for outcome, n in followed.outcomes.items():
            outcomes.add_metric([outcome], float(n))
        yield outcomes
        yield gauge_from(
            "marianne_execution_attempts_undecided",
            "execution_history attempts whose sheet has neither ended nor gone on (not counted yet)",
            [],
            [((), float(followed.undecided))],
        )
        retries = CounterMetricFamily(
            "marianne_job_retries", "Retries of the jobs: each increase of a job's total_retry_count, once"
        )
        retries.add_metric([], float(followed.retries))
        yield retries
        finished = CounterMetricFamily(
            "marianne_jobs_finished",
            "Jobs seen ending (completed, failed, cancelled), each end once; seeded from the rows present at start",
            labels=["status"],
        )
        for status in FINISHED_STATUSES:
            finished.add_metric([status], float(followed.finished.get(status, 0)))
        yield finished
        yield _histogram(
            "marianne_job_duration_seconds",
            "Jobs seen ending with a start and an end: completed_at minus started_at, each end once",
            followed.durations,
        )

    def _aggregates(self, aggregates: Aggregates) -> Iterator[Metric]:
        limit = self.view.settings().max_statuses
        # A gauge: the failed sheets present now.  A failed sheet that is retried leaves the count, so as a
        # counter it would go down (read by Prometheus as a reset).
        failures = GaugeMetricFamily(
            "marianne_sheet_failures",
            self.aggregated("Failed sheets present, by error category and exit reason (none: not recorded)"),
            labels=["error_category", "exit_reason"],
        )
        assert aggregates.failures is not None
        by_category = fold(aggregates.failures.items(), limit)
        by_both = fold((((reason, category), n) for (category, reason), n in by_category.items()), limit)
        for (reason, category), n in sorted(by_both.items()):
            failures.add_metric([category, reason], float(n))
        yield failures
        if aggregates.attempts is not None:
            yield _histogram(
                "marianne_sheet_attempts", self.aggregated("Attempts per sheet (attempt_count)"), aggregates.attempts
            )
        if aggregates.sheet_durations is not None:
            yield _histogram(
                "marianne_sheet_duration_seconds",
                self.aggregated("Sheets' execution_duration_seconds (schema v3 on)"),
                aggregates.sheet_durations,
            )
