"""Flujo's own metric families (``flujo_*``), one collector per concern."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.registry import Collector

from exporter.collectors.base import View
from exporter.engines.flujo.collectors.background import BackgroundTaskCollector
from exporter.engines.flujo.collectors.compat import FlujoCompatCollector
from exporter.engines.flujo.collectors.database import DatabaseCollector
from exporter.engines.flujo.collectors.runs import RunCollector
from exporter.engines.flujo.collectors.spans import SpanCollector
from exporter.engines.flujo.collectors.workflows import WorkflowCollector


def flujo_collectors(view: View) -> Sequence[Collector]:
    return (
        WorkflowCollector(view),
        BackgroundTaskCollector(view),
        RunCollector(view),
        SpanCollector(view),
        DatabaseCollector(view),
        FlujoCompatCollector(view),
    )
