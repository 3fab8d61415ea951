"""Job metrics: what the jobs did (prometheus_client metrics, :mod:`exporter.selfmetrics`), and a collector
adding every job's run statistics from the scheduler.

Nothing here touches the DB.  No run id ever becomes a label.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.engines.flujo.jobs.config import CLEANUP_TABLES
from exporter.jobs.config import JOB_NAMES
from exporter.jobs.scheduler import JobStats
from exporter.labels import LabelCap
from exporter.selfmetrics import SelfMetrics, counts

if TYPE_CHECKING:
    from exporter.engines.flujo.jobs.cleanup import CleanupReport

OUTCOMES = ("success", "retry", "failure")
MAX_ALERT_PIPELINES = 50


class JobMetrics(SelfMetrics):
    """Counters are prometheus_client's (thread-safe); the results of the last cleanup dry run and of the
    last stuck-alert evaluation are plain attributes, each replaced whole, read at scrape time."""

    def __init__(self, enabled: Mapping[str, bool], receivers: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.enabled = dict(enabled)
        self.receivers = receivers
        self.would_delete: dict[str, int] | None = None  # by table; None until a dry run
        self.firing: dict[str, int] = {}  # by pipeline label
        self._pipelines = LabelCap(MAX_ALERT_PIPELINES)
        self._deleted = self.counter(
            "state_exporter_cleanup_deleted_rows",
            "Rows deleted by the cleanup job, by table",
            ["table"],
            [(table,) for table in CLEANUP_TABLES],
        )
        self.scrape_gauge(
            "state_exporter_cleanup_would_delete_rows",
            "Rows the last dry run of the cleanup job would have deleted, by table",
            self._would_delete,
            ["table"],
        )
        self._kept = self.gauge(
            "state_exporter_cleanup_kept_unexported_runs",
            "Old runs the last cleanup kept because their spans were not exported yet",
        )
        self._stale = self.counter(
            "state_exporter_stale_tasks_failed",
            "Running background tasks set to failed by the stale_background_tasks job (timed out)",
        )
        self.scrape_gauge(
            "state_exporter_stuck_alerts_firing",
            f"Stuck-run alerts currently firing, by pipeline (more than {MAX_ALERT_PIPELINES} pipelines: 'other')",
            lambda: {(pipeline,): count for pipeline, count in sorted(self.firing.items())},
            ["pipeline"],
        )
        self._deliveries = self.counter(
            "state_exporter_alert_deliveries",
            "Alert deliveries by receiver and outcome: success, retry (an attempt failed and was retried), "
            "failure (all attempts of a run failed; retried at the next run)",
            ["receiver", "outcome"],
            [(receiver, outcome) for receiver in receivers for outcome in OUTCOMES],
        )
        self._supported = self.gauge(
            "state_exporter_job_supported",
            "0 when the DB layout cannot support the job (it then does nothing), else 1",
            ["job_name"],
        )
        for job in JOB_NAMES:
            self._supported.labels(job).set(1)

    def inherit(self, previous: JobMetrics) -> None:
        """Carry the counters over from the metrics this one replaces (a config reload): counters never
        reset while the process lives.  Deliveries go on for the receivers still configured."""
        for (table,), rows in counts(previous._deleted).items():
            self._deleted.labels(table).inc(rows)
        for _, failed in counts(previous._stale).items():
            self._stale.inc(failed)
        for (receiver, outcome), delivered in counts(previous._deliveries).items():
            if receiver in self.receivers:
                self._deliveries.labels(receiver, outcome).inc(delivered)
        self.firing = dict.fromkeys(previous.firing, 0)
        self._pipelines = previous._pipelines.copy()

    def set_supported(self, job: str, supported: bool) -> None:
        self._supported.labels(job).set(1 if supported else 0)

    def cleanup_deleted(self, rows: Mapping[str, int]) -> None:
        for table, count in rows.items():
            self._deleted.labels(table).inc(count)

    def cleanup_finished(self, report: CleanupReport) -> None:
        self._kept.set(len(report.kept_unexported))
        if report.dry_run:
            self.would_delete = {t: report.rows.get(t, 0) for t in CLEANUP_TABLES}

    def stale_failed(self, count: int) -> None:
        self._stale.inc(count)

    def alerts_firing(self, pipelines: Counter[str]) -> None:
        """Currently firing stuck-run alerts per pipeline; pipelines seen before stay at 0."""
        folded: Counter[str] = Counter()
        for pipeline, count in pipelines.items():
            folded[self._pipelines.label(pipeline)] += count
        self.firing = dict.fromkeys(self.firing, 0) | dict(folded)

    def delivery(self, receiver: str, outcome: str) -> None:
        self._deliveries.labels(receiver, outcome).inc()

    def _would_delete(self) -> dict[tuple[str, ...], float] | None:
        would_delete = self.would_delete
        return None if would_delete is None else {(table,): rows for table, rows in would_delete.items()}


class JobsCollector(Collector):
    """``state_exporter_job_*`` for every job, plus what the jobs did."""

    def __init__(self, metrics: JobMetrics, stats: Callable[[str], JobStats | None]) -> None:
        self._metrics = metrics
        self._stats = stats

    def describe(self) -> list[Metric]:
        return []  # nothing to compute at registration

    def collect(self) -> Iterator[Metric]:
        yield from self._job_families()
        yield from self._metrics.collect()

    def _job_families(self) -> Iterator[Metric]:
        enabled = GaugeMetricFamily(
            "state_exporter_job_enabled", "1 when the job is enabled in the config", labels=["job_name"]
        )
        success = GaugeMetricFamily(
            "state_exporter_job_success",
            "1 when the job's last run succeeded (0 before the first run)",
            labels=["job_name"],
        )
        duration = GaugeMetricFamily(
            "state_exporter_job_duration_seconds", "Duration of the job's last run", labels=["job_name"]
        )
        last = GaugeMetricFamily(
            "state_exporter_job_last_success_timestamp_seconds",
            "Unix time the job's last successful run ended",
            labels=["job_name"],
        )
        runs = CounterMetricFamily("state_exporter_job_runs", "Finished runs of the job", labels=["job_name"])
        errors = CounterMetricFamily(
            "state_exporter_job_errors", "Failed runs of the job (timeouts included)", labels=["job_name"]
        )
        skipped = CounterMetricFamily(
            "state_exporter_job_skipped",
            "Runs not started because the previous run of the job was still going",
            labels=["job_name"],
        )
        lock_skipped = CounterMetricFamily(
            "state_exporter_job_lock_skipped",
            "Runs not started because another exporter holds the job's Postgres advisory lock and runs it",
            labels=["job_name"],
        )
        for job in JOB_NAMES:
            enabled.add_metric([job], 1 if self._metrics.enabled.get(job) else 0)
            stats = self._stats(job)
            # Counters of every known job exist from the start (0 for a disabled one), so that
            # increase() and absent()-free alerts work from the first scrape.
            runs.add_metric([job], 0 if stats is None else stats.runs)
            errors.add_metric([job], 0 if stats is None else stats.errors)
            skipped.add_metric([job], 0 if stats is None else stats.skipped)
            lock_skipped.add_metric([job], 0 if stats is None else stats.lock_skipped)
            if stats is None:
                continue
            success.add_metric([job], 1 if stats.success else 0)
            duration.add_metric([job], stats.duration_s)
            if stats.last_success is not None:
                last.add_metric([job], stats.last_success.timestamp())
        yield from (enabled, success, duration, last, runs, errors, skipped, lock_skipped)
