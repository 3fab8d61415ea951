"""The scrape side: the engine's own collectors, the overview and the daemon's health.

All read the refresher's snapshot; none touches the DB.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.collectors.base import View, ViewCollector
from exporter.collectors.health import HealthCollector, SnapshotAgeCollector
from exporter.collectors.overview import OverviewCollector
from exporter.engines import engine

__all__ = ["View", "build_registry"]


class EngineCollector(ViewCollector):
    """The metric families of whichever engine the last refresh recognised (none before that).
    A file swapped for another engine's file switches the families with it."""

    def __init__(self, view: View) -> None:
        super().__init__(view)
        self._by_engine: dict[str, Sequence[Collector]] = {}

    def collect(self) -> Iterator[Metric]:
        schema = self.view.state().schema
        if schema is None:
            return
        collectors = self._by_engine.get(schema.engine)
        if collectors is None:
            collectors = self._by_engine[schema.engine] = engine(schema.engine).collectors(self.view)
        for collector in collectors:
            yield from collector.collect()


def build_registry(view: View, live: CollectorRegistry | None = None) -> CollectorRegistry:
    """The snapshot's collectors; the scrape-time ones go to ``live`` when given (else here too)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (EngineCollector, HealthCollector, OverviewCollector):
        registry.register(collector(view))
    (live if live is not None else registry).register(SnapshotAgeCollector(view))
    return registry
