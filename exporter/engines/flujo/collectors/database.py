"""The DB file itself: sizes, layout and what it can report."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.engines.flujo.collectors.base import FlujoCollector
from exporter.engines.flujo.layout import Capability


class DatabaseCollector(FlujoCollector):
    def collect(self) -> Iterator[Metric]:
        state = self.view.state()
        schema = self.flujo_state().schema
        size = GaugeMetricFamily("flujo_db_size_bytes", self.cached("Size of the SQLite DB file"))
        size.add_metric([], state.db_bytes)
        yield size
        wal = GaugeMetricFamily("flujo_db_wal_size_bytes", self.cached("Size of the DB's -wal file (0 when absent)"))
        wal.add_metric([], state.wal_bytes)
        yield wal
        if schema is None:
            return
        layout = GaugeMetricFamily(
            "flujo_db_layout_info", "Flujo DB layout recognised from the columns present", labels=["layout"]
        )
        layout.add_metric([schema.layout.value], 1)
        yield layout
        capability = GaugeMetricFamily(
            "flujo_db_capability",
            "1 when the DB layout has the table/columns behind a family of metrics, else 0",
            labels=["capability"],
        )
        for cap in sorted(Capability):
            capability.add_metric([cap.value], 1 if schema.supports(cap) else 0)
        yield capability
