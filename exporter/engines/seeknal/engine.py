"""The ``seeknal`` engine as the registry sees it (kept apart from the package so that importing
one of its modules does not load the whole engine)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.engines.base import Engine, FileBackend
from exporter.engines.seeknal.jsonfile import load, state_files
from exporter.engines.seeknal.layout import ENGINE_NAME, recognise
from exporter.engines.seeknal.snapshot import STUCK_REASONS
from exporter.engines.seeknal.stats import SeeknalStats
from exporter.engines.seeknal.statuses import PHASES
from exporter.engines.seeknal.stuck import STUCK_ALERT_NAME, stuck_runs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from prometheus_client.registry import Collector

    from exporter.collectors.base import View


def _collectors(view: View) -> Sequence[Collector]:
    # Imported when first needed: the collectors pull in the whole scrape side.
    from exporter.engines.seeknal.collectors import seeknal_collectors

    return seeknal_collectors(view)


ENGINE = Engine(
    name=ENGINE_NAME,
    title="seeknal",
    summary="seeknal 2.x (DatabaseStateBackend SQLite: run_state, node_state, backend_locks; or target/run_state.json)",
    phases=PHASES,
    stuck_reasons=STUCK_REASONS,
    recognise=recognise,
    new_stats=SeeknalStats,
    collectors=_collectors,
    stuck_runs=stuck_runs,
    stuck_alert_name=STUCK_ALERT_NAME,
    file_backend=FileBackend(files=state_files, load=load),
)
