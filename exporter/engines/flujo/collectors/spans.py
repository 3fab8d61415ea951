"""Stored trace spans."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.base import gauge_from
from exporter.engines.flujo.collectors.base import FlujoCollector
from exporter.labels import cap_statuses

# flujo's span statuses ("error" and "unknown" come from its fallback paths).
SPAN_STATUSES = ("running", "completed", "failed", "error", "unknown")


class SpanCollector(FlujoCollector):
    def collect(self) -> Iterator[Metric]:
        state = self.flujo_state()
        if state.counts is None or state.counts.spans_total is None:
            return
        stored = GaugeMetricFamily("flujo_spans_stored", self.counted("Rows of the spans table"))
        stored.add_metric([], state.counts.spans_total)
        yield stored
        aggregates = state.aggregates
        if aggregates is None or aggregates.spans is None:
            return
        by_status = cap_statuses(aggregates.spans.by_status, SPAN_STATUSES, self.view.settings().max_statuses)
        yield gauge_from(
            "flujo_spans_by_status",
            self.aggregated("Stored spans by status"),
            ["status"],
            [((s,), float(n)) for s, n in by_status.items()],
        )
        unfinished = GaugeMetricFamily("flujo_spans_unfinished", self.aggregated("Stored spans without an end time"))
        unfinished.add_metric([], aggregates.spans.unfinished)
        yield unfinished
