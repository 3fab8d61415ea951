"""The ``pynenc`` engine as the registry sees it (kept apart from the package so that importing one
of its modules, e.g. its job settings, does not load the whole engine)."""

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
    from exporter.traces.source import Limits, SpanSource


def _collectors(view: View) -> Sequence[Collector]:
    # Imported when first needed: the collectors pull in the whole scrape side.
    from exporter.engines.pynenc.collectors import pynenc_collectors

    return pynenc_collectors(view)


def _spans(limits: Limits) -> SpanSource:
    # Imported when first needed: span export is optional.
    from exporter.engines.pynenc.traces.spans import PynencSpans

    return PynencSpans(limits)


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
    spans=_spans,
)
