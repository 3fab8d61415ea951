"""The ``seeknal`` engine as the registry sees it (kept apart from the package so that importing
one of its modules does not load the whole engine)."""

from __future__ import annotations

from exporter.engines.base import Engine, FileBackend, imported_on_call
from exporter.engines.seeknal.jsonfile import load, state_files
from exporter.engines.seeknal.layout import ENGINE_NAME, recognise
from exporter.engines.seeknal.snapshot import STUCK_REASONS
from exporter.engines.seeknal.stats import SeeknalStats
from exporter.engines.seeknal.statuses import PHASES
from exporter.engines.seeknal.stuck import STUCK_ALERT_NAME, stuck_runs

ENGINE = Engine(
    name=ENGINE_NAME,
    title="seeknal",
    summary="seeknal 2.x (DatabaseStateBackend SQLite: run_state, node_state, backend_locks; or target/run_state.json)",
    phases=PHASES,
    stuck_reasons=STUCK_REASONS,
    recognise=recognise,
    new_stats=SeeknalStats,
    collectors=imported_on_call("exporter.engines.seeknal.collectors:seeknal_collectors"),
    stuck_runs=stuck_runs,
    stuck_alert_name=STUCK_ALERT_NAME,
    spans=imported_on_call("exporter.engines.seeknal.traces.spans:SeeknalSpans"),
    file_backend=FileBackend(files=state_files, load=load),
)
