"""The ``marianne`` engine as the registry sees it (kept apart from the package so that importing
one of its modules does not load the whole engine)."""

from __future__ import annotations

from exporter.engines.base import Engine, imported_on_call
from exporter.engines.marianne.layout import ENGINE_NAME, recognise
from exporter.engines.marianne.snapshot import STUCK_REASONS
from exporter.engines.marianne.stats import MarianneStats
from exporter.engines.marianne.statuses import PHASES
from exporter.engines.marianne.stuck import STUCK_ALERT_NAME, stuck_runs

ENGINE = Engine(
    name=ENGINE_NAME,
    title="Marianne",
    summary="Marianne (marianne-ai-compose) 0.1: a workspace's .marianne-state.db (schema v1 to v4) "
    "or the conductor registry daemon-state.db with its workspaces",
    phases=PHASES,
    stuck_reasons=STUCK_REASONS,
    recognise=recognise,
    new_stats=MarianneStats,
    collectors=imported_on_call("exporter.engines.marianne.collectors:marianne_collectors"),
    stuck_runs=stuck_runs,
    stuck_alert_name=STUCK_ALERT_NAME,
    spans=imported_on_call("exporter.engines.marianne.traces.spans:MarianneSpans"),
)
