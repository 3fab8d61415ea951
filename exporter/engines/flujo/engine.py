"""The ``flujo`` engine as the registry sees it (kept apart from the package so that importing one
of its modules, e.g. its job settings, does not load the whole engine)."""

from __future__ import annotations

from exporter.engines.base import Engine, imported_on_call
from exporter.engines.flujo.layout import ENGINE_NAME, recognise, recognise_postgres
from exporter.engines.flujo.stats import FlujoStats
from exporter.engines.flujo.statuses import PHASES
from exporter.engines.flujo.stuck import STUCK_REASONS, stuck_runs

ENGINE = Engine(
    name=ENGINE_NAME,
    title="Flujo",
    summary="Flujo 0.4.32 to 0.6.x (workflow_state, runs, steps, spans), on SQLite or Postgres",
    phases=PHASES,
    stuck_reasons=tuple(STUCK_REASONS.values()),
    recognise=recognise,
    new_stats=FlujoStats,
    collectors=imported_on_call("exporter.engines.flujo.collectors:flujo_collectors"),
    stuck_runs=stuck_runs,
    stuck_alert_name="FlujoRunStuck",
    spans=imported_on_call("exporter.engines.flujo.traces.spans:FlujoSpans"),
    recognise_postgres=recognise_postgres,
)
