"""flujo's own PrometheusCollector names, for existing dashboards (metrics.flujo_compat: true).

Same meaning as flujo: every workflow_state row, background tasks included (0.6.x), and
``flujo_runs_total`` is a gauge despite its name.  Values come from our snapshot, so the 24 h
bug of flujo does not apply (flujo exports no windowed value anyway).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.engines.flujo.collectors.base import FlujoCollector
from exporter.engines.flujo.statuses import WORKFLOW_STATUSES
from exporter.labels import cap_statuses


class FlujoCompatCollector(FlujoCollector):
    def collect(self) -> Iterator[Metric]:
        settings = self.view.settings()
        if not settings.flujo_compat:
            return
        state = self.flujo_state()
        counts = state.counts
        if counts is None:
            return
        every = counts.workflows_by_status + (counts.background_by_status or Counter())
        total = GaugeMetricFamily("flujo_runs_total", "Total pipeline runs")
        total.add_metric([], sum(every.values()))
        yield total
        by_status = GaugeMetricFamily("flujo_runs_by_status", "Pipeline runs by status", labels=["status"])
        for status, n in sorted(_present(every, settings.max_statuses).items()):
            by_status.add_metric([status], n)
        yield by_status
        if state.aggregates is not None:
            average = GaugeMetricFamily("flujo_avg_duration_ms", "Average pipeline duration in milliseconds")
            average.add_metric([], state.aggregates.average_execution_time_ms)
            yield average
        if counts.background_by_status is not None:
            background = GaugeMetricFamily(
                "flujo_background_tasks_by_status", "Background tasks by status", labels=["status"]
            )
            for status, n in sorted(_present(counts.background_by_status, settings.max_statuses).items()):
                background.add_metric([status], n)
            yield background


def _present(counts: Counter[str], limit: int) -> dict[str, int]:
    """Capped like our own families, but like flujo only the statuses present (no zero series)."""
    return {s: n for s, n in cap_statuses(counts, WORKFLOW_STATUSES, limit).items() if n or s in counts}
