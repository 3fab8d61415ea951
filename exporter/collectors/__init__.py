"""One collector per concern; all read the refresher's snapshot, none touches the DB."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from exporter.collectors.background import BackgroundTaskCollector
from exporter.collectors.base import View, ViewCollector
from exporter.collectors.compat import FlujoCompatCollector
from exporter.collectors.database import DatabaseCollector
from exporter.collectors.health import HealthCollector, SnapshotAgeCollector
from exporter.collectors.runs import RunCollector
from exporter.collectors.spans import SpanCollector
from exporter.collectors.workflows import WorkflowCollector

COLLECTORS: tuple[type[ViewCollector], ...] = (
    WorkflowCollector,
    BackgroundTaskCollector,
    RunCollector,
    SpanCollector,
    DatabaseCollector,
    HealthCollector,
    FlujoCompatCollector,
)

__all__ = ["View", "build_registry"]


def build_registry(view: View, live: CollectorRegistry | None = None) -> CollectorRegistry:
    """The snapshot's collectors; the scrape-time ones go to ``live`` when given (else here too)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in COLLECTORS:
        registry.register(collector(view))
    (live if live is not None else registry).register(SnapshotAgeCollector(view))
    return registry
