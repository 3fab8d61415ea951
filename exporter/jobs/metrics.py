"""In-memory job metrics, and a collector that renders fresh metric families from them on every scrape.

Jobs update :class:`JobMetrics` under a lock; a scrape (in the web server's executor thread) copies
it under the same lock.  Nothing here touches the DB.  No run id ever becomes a label.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.jobs.config import JOB_NAMES
from exporter.jobs.scheduler import JobStats
from exporter.labels import LabelCap

if TYPE_CHECKING:
    from exporter.engines.flujo.jobs.cleanup import CleanupReport

CLEANUP_TABLES = ("workflow_state", "runs", "steps", "spans", "traces", "evaluations")
OUTCOMES = ("success", "retry", "failure")
MAX_ALERT_PIPELINES = 50


@dataclass
class _Values:
    supported: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(JOB_NAMES, True))
    deleted: Counter[str] = field(default_factory=Counter)
    would_delete: dict[str, int] | None = None
    kept_unexported: int = 0
    stale_failed: int = 0
    firing: dict[str, int] = field(default_factory=dict)
    deliveries: Counter[tuple[str, str]] = field(default_factory=Counter)


class JobMetrics:
    def __init__(self, enabled: Mapping[str, bool], receivers: tuple[str, ...] = ()) -> None:
        self.enabled = dict(enabled)
        self.receivers = receivers
        self._values = _Values()
        self._lock = threading.Lock()
        self._pipelines = LabelCap(MAX_ALERT_PIPELINES)

    def inherit(self, previous: JobMetrics) -> None:
        """Carry the counters over from the metrics this one replaces (a config reload): counters never
        reset while the process lives."""
        old = previous.snapshot()
        with self._lock:
            self._values.deleted.update(old.deleted)
            self._values.stale_failed += old.stale_failed
            self._values.deliveries.update(old.deliveries)
            self._values.firing = dict.fromkeys(old.firing, 0)
        self._pipelines = previous._pipelines.copy()

    def set_supported(self, job: str, supported: bool) -> None:
        with self._lock:
            self._values.supported[job] = supported

    def cleanup_deleted(self, rows: Mapping[str, int]) -> None:
        with self._lock:
            self._values.deleted.update(rows)

    def cleanup_finished(self, report: CleanupReport) -> None:
        with self._lock:
            self._values.kept_unexported = len(report.kept_unexported)
            if report.dry_run:
                self._values.would_delete = {t: report.rows.get(t, 0) for t in CLEANUP_TABLES}

    def stale_failed(self, count: int) -> None:
        with self._lock:
            self._values.stale_failed += count

    def alerts_firing(self, pipelines: Counter[str]) -> None:
        """Currently firing stuck-run alerts per pipeline; pipelines seen before stay at 0."""
        folded: Counter[str] = Counter()
        for pipeline, count in pipelines.items():
            folded[self._pipelines.label(pipeline)] += count
        with self._lock:
            self._values.firing = {p: 0 for p in self._values.firing} | dict(folded)

    def delivery(self, receiver: str, outcome: str) -> None:
        with self._lock:
            self._values.deliveries[(receiver, outcome)] += 1

    def snapshot(self) -> _Values:
        with self._lock:
            v = self._values
            return _Values(
                dict(v.supported),
                Counter(v.deleted),
                None if v.would_delete is None else dict(v.would_delete),
                v.kept_unexported,
                v.stale_failed,
                dict(v.firing),
                Counter(v.deliveries),
            )


class JobsCollector(Collector):
    """``state_exporter_job_*`` for every job, plus what the jobs did."""

    def __init__(self, metrics: JobMetrics, stats: Callable[[str], JobStats | None]) -> None:
        self._metrics = metrics
        self._stats = stats

    def describe(self) -> list[Metric]:
        return []  # nothing to compute at registration

    def collect(self) -> Iterator[Metric]:
        yield from self._job_families()
        v = self._metrics.snapshot()
        deleted = CounterMetricFamily(
            "state_exporter_cleanup_deleted_rows", "Rows deleted by the cleanup job, by table", labels=["table"]
        )
        for table in CLEANUP_TABLES:
            deleted.add_metric([table], v.deleted.get(table, 0))
        yield deleted
        if v.would_delete is not None:
            would = GaugeMetricFamily(
                "state_exporter_cleanup_would_delete_rows",
                "Rows the last dry run of the cleanup job would have deleted, by table",
                labels=["table"],
            )
            for table in CLEANUP_TABLES:
                would.add_metric([table], v.would_delete.get(table, 0))
            yield would
        kept = GaugeMetricFamily(
            "state_exporter_cleanup_kept_unexported_runs",
            "Old runs the last cleanup kept because their spans were not exported yet",
        )
        kept.add_metric([], v.kept_unexported)
        yield kept
        stale = CounterMetricFamily(
            "state_exporter_stale_tasks_failed",
            "Running background tasks set to failed by the stale_background_tasks job (timed out)",
        )
        stale.add_metric([], v.stale_failed)
        yield stale
        firing = GaugeMetricFamily(
            "state_exporter_stuck_alerts_firing",
            f"Stuck-run alerts currently firing, by pipeline (more than {MAX_ALERT_PIPELINES} pipelines: 'other')",
            labels=["pipeline"],
        )
        for pipeline, count in sorted(v.firing.items()):
            firing.add_metric([pipeline], count)
        yield firing
        deliveries = CounterMetricFamily(
            "state_exporter_alert_deliveries",
            "Alert deliveries by receiver and outcome: success, retry (an attempt failed and was retried), "
            "failure (all attempts of a run failed; retried at the next run)",
            labels=["receiver", "outcome"],
        )
        for receiver in self._metrics.receivers:
            for outcome in OUTCOMES:
                deliveries.add_metric([receiver, outcome], v.deliveries.get((receiver, outcome), 0))
        yield deliveries
        supported = GaugeMetricFamily(
            "state_exporter_job_supported",
            "0 when the DB layout cannot support the job (it then does nothing), else 1",
            labels=["job_name"],
        )
        for job in JOB_NAMES:
            supported.add_metric([job], 1 if v.supported.get(job, True) else 0)
        yield supported

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
        for job in JOB_NAMES:
            enabled.add_metric([job], 1 if self._metrics.enabled.get(job) else 0)
            stats = self._stats(job)
            # Counters of every known job exist from the start (0 for a disabled one), so that
            # increase() and absent()-free alerts work from the first scrape.
            runs.add_metric([job], 0 if stats is None else stats.runs)
            errors.add_metric([job], 0 if stats is None else stats.errors)
            skipped.add_metric([job], 0 if stats is None else stats.skipped)
            if stats is None:
                continue
            success.add_metric([job], 1 if stats.success else 0)
            duration.add_metric([job], stats.duration_s)
            if stats.last_success is not None:
                last.add_metric([job], stats.last_success.timestamp())
        yield from (enabled, success, duration, last, runs, errors, skipped)
