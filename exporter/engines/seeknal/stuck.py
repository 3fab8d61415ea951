"""The stuck nodes, for the stuck-run alerts: the same rule and settings as ``seeknal_nodes_stuck``.

One alert per stuck node: ``run_id`` is its run, ``group`` the node id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from exporter.engines.seeknal.layout import seeknal_schema
from exporter.engines.seeknal.snapshot import running_nodes, stuck_nodes
from exporter.engines.seeknal.statuses import PHASES, RUNNING
from exporter.model import StuckReason, StuckRun

if TYPE_CHECKING:
    from exporter.config import MetricsConfig
    from exporter.reader import ReadSession
    from exporter.reader.badvalues import BadValue

STUCK_ALERT_NAME = "SeeknalNodeStuck"


def stuck_runs(session: ReadSession, now: datetime, settings: MetricsConfig) -> list[StuckRun]:
    seeknal_schema(session.schema)
    bad: list[BadValue] = []  # counted and logged by the refresh, which reads the same rows
    running = running_nodes(session.conn, session.naive_tz, settings, bad)
    return [
        StuckRun(
            run_id=node.run_id,
            group=node.node_id,
            status=RUNNING,
            phase=PHASES.phases[RUNNING],
            reason=StuckReason.IDLE,
            updated_at=datetime.fromtimestamp(node.last_run, UTC),
            threshold=node.threshold,
        )
        for node in stuck_nodes(running, now)
    ]
