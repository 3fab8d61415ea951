"""The invocations pynenc's own recovery services would pick up, for the stuck-run alerts.

The same two rules, with the same per-app thresholds, as ``pynenc_invocations_stuck``: running on a
dead runner, and pending for longer than ``max_pending_seconds``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from exporter.engines.pynenc.layout import INVOCATIONS, Schema
from exporter.engines.pynenc.snapshot import pending_too_long, running_on_dead_runners
from exporter.engines.pynenc.statuses import PENDING, PHASES, RUNNING
from exporter.engines.pynenc.values import app_config
from exporter.model import StuckReason, StuckRun
from exporter.reader.errors import DatabaseUnavailable, Problem

if TYPE_CHECKING:
    from exporter.config import MetricsConfig
    from exporter.reader import ReadSession
    from exporter.reader.badvalues import BadValue

STUCK_ALERT_NAME = "PynencInvocationStuck"


def stuck_runs(session: ReadSession, now: datetime, settings: MetricsConfig) -> list[StuckRun]:
    schema = session.schema
    if not isinstance(schema, Schema):
        raise DatabaseUnavailable(Problem.UNKNOWN_LAYOUT, f"this is a {schema.engine} state DB, not a pynenc one")
    conn, found = session.conn, []
    bad: list[BadValue] = []  # counted and logged by the refresh, which reads the same rows
    for app in schema.apps:
        if not app.has(INVOCATIONS):
            continue
        config = app_config(conn, app)
        dead_after = timedelta(minutes=config.runner_dead_after_minutes)
        for invocation_id, since, heartbeat in running_on_dead_runners(conn, app, (now - dead_after).timestamp(), bad):
            found.append(
                StuckRun(
                    run_id=invocation_id,
                    group=config.label,
                    status=RUNNING,
                    phase=PHASES.phases[RUNNING],
                    reason=StuckReason.RUNNER_DEAD,
                    updated_at=datetime.fromtimestamp(heartbeat if heartbeat is not None else since, UTC),
                    threshold=dead_after,
                )
            )
        max_pending = timedelta(seconds=config.max_pending_seconds)
        for invocation_id, since in pending_too_long(conn, app, (now - max_pending).timestamp()):
            found.append(
                StuckRun(
                    run_id=invocation_id,
                    group=config.label,
                    status=PENDING,
                    phase=PHASES.phases[PENDING],
                    reason=StuckReason.PENDING_TIMEOUT,
                    updated_at=datetime.fromtimestamp(since, UTC),
                    threshold=max_pending,
                )
            )
    return found
