"""The ``flujo`` engine as the registry sees it (kept apart from the package so that importing one
of its modules, e.g. its job settings, does not load the whole engine)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.engines.base import Engine
from exporter.engines.flujo.layout import ENGINE_NAME, recognise
from exporter.engines.flujo.stats import FlujoStats
from exporter.engines.flujo.statuses import PHASES
from exporter.engines.flujo.stuck import STUCK_REASONS, stuck_runs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from prometheus_client.registry import Collector

    from exporter.collectors.base import View
    from exporter.traces.source import Limits, SpanSource


def _collectors(view: View) -> Sequence[Collector]:
    # Imported when first needed: the collectors pull in the whole scrape side.
    from exporter.engines.flujo.collectors import flujo_collectors

    return flujo_collectors(view)


def _spans(limits: Limits) -> SpanSource:
    # Imported when first needed: span export is optional.
    from exporter.engines.flujo.traces.spans import FlujoSpans

    return FlujoSpans(limits)


ENGINE = Engine(
    name=ENGINE_NAME,
    title="Flujo",
    summary="Flujo 0.4.32 to 0.6.x (workflow_state, runs, steps, spans)",
    phases=PHASES,
    stuck_reasons=tuple(STUCK_REASONS.values()),
    recognise=recognise,
    new_stats=FlujoStats,
    collectors=_collectors,
    stuck_runs=stuck_runs,
    stuck_alert_name="FlujoRunStuck",
    spans=_spans,
)
