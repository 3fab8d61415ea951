"""The ``runs`` and ``steps`` tables: current states and watermark-fed counters and histograms."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from exporter.collectors.base import ViewCollector, gauge_from
from exporter.labels import fold
from exporter.tracking import Histogram

RUN_STATUSES = ("running", "completed", "failed")


class RunCollector(ViewCollector):
    def collect(self) -> Iterator[Metric]:
        state = self.view.state()
        counts = state.counts
        if counts is None or counts.runs_by_status is None:
            return
        statuses = set(RUN_STATUSES) | set(counts.runs_by_status)
        yield gauge_from(
            "flujo_runs",
            self.counted("Rows of the runs table by status"),
            ["status"],
            [((s,), float(counts.runs_by_status.get(s, 0))) for s in statuses],
        )
        aggregates = state.aggregates
        if aggregates is not None and aggregates.runs_by_pipeline_status is not None:
            limit = self.view.settings().max_pipelines
            yield gauge_from(
                "flujo_runs_by_pipeline",
                self.aggregated(f"Rows of the runs table by pipeline and status; pipelines past {limit} are 'other'"),
                ["pipeline", "status"],
                [(k, float(n)) for k, n in fold(aggregates.runs_by_pipeline_status.items(), limit).items()],
            )
        finished = state.finished
        if not finished.seeded:
            return
        runs_total = CounterMetricFamily(
            "flujo_runs_finished",
            "Runs seen finishing, by pipeline and final status (fed by a rowid watermark: cleanup never "
            "lowers it; seeded from the rows present at start)",
            labels=["pipeline", "status"],
        )
        for (pipeline, status), n in sorted(finished.runs.items()):
            runs_total.add_metric([pipeline, status], n)
        yield runs_total
        yield _histogram(
            "flujo_run_duration_seconds",
            "Duration of finished runs by pipeline (runs finishing since start, plus those that finished "
            "within metrics.run_duration_window before it)",
            "pipeline",
            finished.run_durations,
        )
        steps_total = CounterMetricFamily(
            "flujo_steps_finished",
            "Recorded step results by step name and status (failed = step failures); names past "
            f"{self.view.settings().max_steps} are 'other'",
            labels=["step", "status"],
        )
        for (step, status), n in sorted(finished.steps.items()):
            steps_total.add_metric([step, status], n)
        yield steps_total
        yield _histogram(
            "flujo_step_duration_seconds",
            "Duration of recorded steps by step name (0.6.x DBs record none)",
            "step",
            finished.step_durations,
        )


def _histogram(name: str, documentation: str, label: str, histograms: dict[str, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=[label])
    for value, histogram in sorted(histograms.items()):
        family.add_metric([value], histogram.buckets(), histogram.total)
    return family
