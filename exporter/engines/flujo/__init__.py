"""Flujo (0.4.32 to 0.6.x): its ``workflow_state``, ``runs``, ``steps`` and ``spans`` tables.

Everything the daemon knows about Flujo's files lives in this package: layouts, statuses, queries,
the stuck rule, the finished-run tracker, span reading, and the write jobs Flujo's own backend
defines (cleanup of old rows, the stale background-task timeout).
"""

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


def _collectors(view: View) -> Sequence[Collector]:
    # Imported when first needed: the collectors pull in the whole scrape side.
    from exporter.engines.flujo.collectors import flujo_collectors

    return flujo_collectors(view)


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
)
