"""What a scrape of the span export's metrics shows, read through the collector (as /metrics does)."""

from __future__ import annotations

from exporter.traces import TraceStats

EXPORTED = "state_exporter_spans_exported"
FAILURES = "state_exporter_span_export_failures"
DEAD = "state_exporter_spans_dead_lettered"


def counter(stats: TraceStats, family: str) -> float:
    return sum(s.value for m in stats.collect() for s in m.samples if s.name == family + "_total")


def by_reason(stats: TraceStats, family: str) -> dict[str, float]:
    """The reasons counted so far (not 0)."""
    return {
        s.labels["reason"]: s.value
        for m in stats.collect()
        for s in m.samples
        if s.name == family + "_total" and s.value
    }
