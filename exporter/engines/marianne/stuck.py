"""The jobs ``marianne_jobs_stuck`` counts, for the stuck-run alerts: a dead pid (same-host check
on) or no update for ``metrics.stuck.running_after``, one reason per job."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from exporter.engines.marianne.layout import marianne_schema
from exporter.engines.marianne.snapshot import running_jobs
from exporter.engines.marianne.statuses import PHASES
from exporter.model import StuckReason, StuckRun

if TYPE_CHECKING:
    from exporter.config import MetricsConfig
    from exporter.reader import ReadSession
    from exporter.reader.badvalues import BadValue

STUCK_ALERT_NAME = "MarianneJobStuck"


def stuck_runs(session: ReadSession, now: datetime, settings: MetricsConfig) -> list[StuckRun]:
    bad: list[BadValue] = []  # counted and logged by the refresh, which reads the same rows
    found = []
    for job in running_jobs(session.conn, marianne_schema(session.schema), now, settings, bad):
        reason = job.reason
        if reason is None:
            continue
        # A dead pid is stuck from its last update on; an idle job from its threshold on.
        threshold = timedelta(0) if reason is StuckReason.PID_DEAD else settings.stuck.running_after
        found.append(
            StuckRun(
                run_id=job.job_id,
                group=job.name,
                status=job.status,
                phase=PHASES.phases[job.status],
                reason=reason,
                updated_at=job.updated_at,
                threshold=threshold,
            )
        )
    return found
