"""pynenc (0.1.0 to 0.4.x) with its SQLite components: orchestrator, state backend and broker
tables, one set per app (``<app>_<hash>__`` prefix since 0.1.1), several apps per file.

Everything the daemon knows about pynenc's files lives in this package: layouts, statuses,
pynenc's own stuck rules, the history cursor and the ``pynenc_*`` families.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.engines.base import Engine
from exporter.engines.pynenc.layout import ENGINE_NAME, recognise
from exporter.engines.pynenc.snapshot import STUCK_REASONS
from exporter.engines.pynenc.stats import PynencStats
from exporter.engines.pynenc.statuses import PHASES
from exporter.engines.pynenc.stuck import STUCK_ALERT_NAME, stuck_runs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from prometheus_client.registry import Collector

    from exporter.collectors.base import View


def _collectors(view: View) -> Sequence[Collector]:
    # Imported when first needed: the collectors pull in the whole scrape side.
    from exporter.engines.pynenc.collectors import pynenc_collectors

    return pynenc_collectors(view)


ENGINE = Engine(
    name=ENGINE_NAME,
    title="pynenc",
    summary="pynenc 0.1.0 to 0.4.x (SQLite orchestrator, state backend and broker tables, per app)",
    phases=PHASES,
    stuck_reasons=STUCK_REASONS,
    recognise=recognise,
    new_stats=PynencStats,
    collectors=_collectors,
    stuck_runs=stuck_runs,
    stuck_alert_name=STUCK_ALERT_NAME,
)
