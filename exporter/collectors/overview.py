"""``workflow_*``: every engine's state in canonical phases, for one dashboard and one alert group.

Labels are bounded by construction: ``engine`` is one of the registered engines, ``phase`` one of
:class:`~exporter.model.Phase`, ``reason`` one of :class:`~exporter.model.StuckReason`.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from exporter.collectors.base import ViewCollector
from exporter.model import Phase


class OverviewCollector(ViewCollector):
    def collect(self) -> Iterator[Metric]:
        overview = self.view.state().overview
        if overview is None:
            return
        engine = overview.engine
        if overview.runs is not None:
            runs = GaugeMetricFamily(
                "workflow_runs",
                self.counted("Top-level runs by canonical phase (the engine's raw statuses mapped)"),
                labels=["engine", "phase"],
            )
            for phase in Phase:
                runs.add_metric([engine, phase.value], overview.runs[phase])
            yield runs
        if overview.stuck is not None:
            stuck = GaugeMetricFamily(
                "workflow_runs_stuck",
                self.cached("Active top-level runs the engine's stuck rule judges stuck, by reason"),
                labels=["engine", "reason"],
            )
            for reason, count in sorted(overview.stuck.items()):
                stuck.add_metric([engine, reason.value], count)
            yield stuck
            oldest = GaugeMetricFamily(
                "workflow_oldest_active_update_timestamp_seconds",
                self.cached("Last update (Unix time) of the longest-idle active top-level run; absent when none"),
                labels=["engine"],
            )
            if overview.oldest_active_update is not None:
                oldest.add_metric([engine], overview.oldest_active_update)
            yield oldest
        if overview.finished is not None:
            finished = CounterMetricFamily(
                "workflow_runs_finished",
                "Top-level runs seen reaching a final phase (seeded from the rows present at start)",
                labels=["engine", "phase"],
            )
            for phase in Phase:
                if phase.is_final:
                    finished.add_metric([engine, phase.value], overview.finished[phase])
            yield finished
        if overview.durations is not None:
            durations = HistogramMetricFamily(
                "workflow_run_duration_seconds",
                "Durations of top-level runs seen finishing, start to end",
                labels=["engine"],
            )
            durations.add_metric([engine], overview.durations.buckets(), overview.durations.total)
            yield durations
