"""The ``pynenc`` engine as the registry sees it (kept apart from the package so that importing one
of its modules, e.g. its job settings, does not load the whole engine)."""

from __future__ import annotations

from exporter.engines.base import Engine, imported_on_call
from exporter.engines.pynenc.layout import ENGINE_NAME, recognise
from exporter.engines.pynenc.snapshot import STUCK_REASONS
from exporter.engines.pynenc.stats import PynencStats
from exporter.engines.pynenc.statuses import PHASES
from exporter.engines.pynenc.stuck import STUCK_ALERT_NAME, stuck_runs

ENGINE = Engine(
    name=ENGINE_NAME,
    title="pynenc",
    summary="pynenc 0.1.0 to 0.4.x (SQLite orchestrator, state backend and broker tables, per app)",
    phases=PHASES,
    stuck_reasons=STUCK_REASONS,
    recognise=recognise,
    new_stats=PynencStats,
    collectors=imported_on_call("exporter.engines.pynenc.collectors:pynenc_collectors"),
    stuck_runs=stuck_runs,
    stuck_alert_name=STUCK_ALERT_NAME,
    spans=imported_on_call("exporter.engines.pynenc.traces.spans:PynencSpans"),
)
